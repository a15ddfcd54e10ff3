r"""Codes <-> bytes: zstd over a measured byte layout, with a checksum per row.

    (N, C, P) integer codes --layout--> N byte strings --zstd (shared dictionary)--> N frames
                                            \--> crc32 of each row's uncompressed bytes

Each row is its own zstd frame, so any row decodes alone. Small rows compress poorly on their
own, so a zstd dictionary trained on the calibration sample is shared by every row and stored
in the archive's metadata (``docs/FORMAT.md``). Layouts:

- ``channel``: for each channel, all its positions (C-order of (C, P)); neighbouring bytes are
  the same channel at neighbouring positions, which is where the redundancy is.
- ``position``: for each position, all its channels (C-order of (P, C)).

The default came from measuring both on the demo conv VAE's codes of 137 held-out 64x64 photo
crops (zstd level 3, shared dictionary): position 376 bytes/row, channel 415; at level 19,
304 against 345. Compressing the whole column at once instead of row by row was 10-20%
smaller still: the price of rows that decode alone.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from pipeline.errors import ConfigError

LAYOUTS = ("channel", "position")
# A dictionary pays for itself only when it is small next to the data it serves; zstd's own
# advice is about a hundredth of the sample. Capped at 16 KiB, floored at 256 bytes.
DICT_MAX_BYTES = 16 * 1024
DICT_MIN_BYTES = 256


@dataclass(frozen=True)
class CodecConfig:
    level: int = 3
    layout: str = "position"
    dictionary: bool = True

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"codec layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not 1 <= self.level <= 22:
            raise ConfigError(f"zstd level must be in 1..22, got {self.level}")


@dataclass(frozen=True)
class CodecParams:
    level: int
    layout: str
    dictionary: bytes = b""       # raw zstd dictionary; empty for none

    def to_dict(self) -> dict:
        return {"name": "zstd", "level": self.level, "layout": self.layout,
                "dictionary_b64": base64.b64encode(self.dictionary).decode()}

    @classmethod
    def from_dict(cls, data: dict) -> CodecParams:
        try:
            if data["name"] != "zstd":
                raise ValueError(f"unknown codec {data['name']!r}")
            params = cls(level=int(data["level"]), layout=str(data["layout"]),
                         dictionary=base64.b64decode(data.get("dictionary_b64", ""), validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise ConfigError(f"bad codec parameters: {err}") from err
        if params.layout not in LAYOUTS:
            raise ConfigError(f"bad codec parameters: unknown layout {params.layout!r}")
        return params


def row_bytes(codes: np.ndarray, layout: str) -> list[bytes]:
    """(N, C, P) codes -> N little-endian byte strings in the given layout."""
    arr = codes if layout == "channel" else np.swapaxes(codes, 1, 2)
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return [r.tobytes() for r in arr]


def rows_to_codes(rows: list[bytes], shape: tuple[int, int], dtype: np.dtype, layout: str) -> np.ndarray:
    """Inverse of ``row_bytes`` for rows sharing one (C, P) shape."""
    c, p = shape
    inner = (c, p) if layout == "channel" else (p, c)
    arr = np.frombuffer(b"".join(rows), dtype=np.dtype(dtype).newbyteorder("<"))
    arr = arr.reshape(len(rows), *inner)
    return (arr if layout == "channel" else np.swapaxes(arr, 1, 2)).astype(dtype)


def checksum(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def train_dictionary(samples: list[bytes], config: CodecConfig) -> bytes:
    """A zstd dictionary from sample rows; empty when there are too few to train on."""
    if not config.dictionary or len(samples) < 8:
        return b""
    try:
        size = min(DICT_MAX_BYTES, sum(len(s) for s in samples) // 100)
        if size < DICT_MIN_BYTES:
            return b""
        d = zstandard.train_dictionary(size, samples, level=config.level)
    except zstandard.ZstdError:
        return b""  # zstd refuses samples that are too small or too uniform to learn from
    return d.as_bytes()


class Codec:
    """Compressor/decompressor pair for one archive's parameters (not thread-safe)."""

    def __init__(self, params: CodecParams) -> None:
        self.params = params
        d = zstandard.ZstdCompressionDict(params.dictionary) if params.dictionary else None
        self._c = zstandard.ZstdCompressor(level=params.level, dict_data=d, write_checksum=False,
                                           write_content_size=True)
        self._d = zstandard.ZstdDecompressor(dict_data=d)

    def compress(self, rows: list[bytes]) -> list[bytes]:
        return [self._c.compress(r) for r in rows]

    def decompress(self, frame: bytes) -> bytes:
        return self._d.decompress(frame)
