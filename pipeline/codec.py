r"""Codes <-> bytes: zstd over a measured byte layout, with a checksum per row.

    (N, C, P) integer codes --layout--> N byte strings --> crc32 of each
        framing "column": the byte strings go into ``vz_codes`` as they are, and Parquet
                          compresses the column chunk (one zstd stream per data page)
        framing "row":    each is its own zstd frame (shared dictionary), as in format v1

Layouts:

- ``channel``: for each channel, all its positions (C-order of (C, P)).
- ``position``: for each position, all its channels (C-order of (P, C)).

The defaults come from measuring the demo conv VAE's codes of 137 held-out 64x64 photo crops
(bytes per row; raw codes are 2,048): per-row frames with a trained dictionary, 458 at level 3;
the Parquet column chunk, 406 at level 3, 357 at level 9 (40 MB/s on one core, a few per cent
of the CPU encoder's time), 312 at level 19 (2 MB/s, slower than the encoder). Position-major
beat channel-major at every level from 3 to 19, on held-out and on training crops (level 9,
2,048 training crops: 273 against 322). On the digits, column framing stores 9 bytes of
codes per row where per-row frames took 23: a frame's own header is most of a 14-byte row.
A row still decodes alone in column framing once its page is read.
``python -m jobs.bench --only codec`` re-measures all of it.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from pipeline.errors import ConfigError

LAYOUTS = ("channel", "position")
FRAMINGS = ("column", "row")
# A dictionary pays for itself only when it is small next to the data it serves; zstd's own
# advice is about a hundredth of the sample. Capped at 16 KiB, floored at 256 bytes.
DICT_MAX_BYTES = 16 * 1024
DICT_MIN_BYTES = 256


@dataclass(frozen=True)
class CodecConfig:
    level: int = 9
    layout: str = "position"
    framing: str = "column"
    dictionary: bool = True  # row framing only: a zstd dictionary shared by every frame

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ConfigError(f"codec framing must be one of {FRAMINGS}, got {self.framing!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"codec layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not 1 <= self.level <= 22:
            raise ConfigError(f"zstd level must be in 1..22, got {self.level}")


@dataclass(frozen=True)
class CodecParams:
    level: int
    layout: str
    framing: str = "column"
    dictionary: bytes = b""  # raw zstd dictionary (row framing); empty for none

    @property
    def column_compression(self) -> tuple[str, int | None]:
        """Parquet compression (and level) of the ``vz_codes`` column chunk."""
        return ("zstd", self.level) if self.framing == "column" else ("none", None)

    def to_dict(self) -> dict:
        return {
            "name": "zstd",
            "level": self.level,
            "layout": self.layout,
            "framing": self.framing,
            "dictionary_b64": base64.b64encode(self.dictionary).decode(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CodecParams:
        try:
            if data["name"] != "zstd":
                raise ValueError(f"unknown codec {data['name']!r}")
            # format v1 had per-row frames only, and no "framing" field
            params = cls(
                level=int(data["level"]),
                layout=str(data["layout"]),
                framing=str(data.get("framing", "row")),
                dictionary=base64.b64decode(data.get("dictionary_b64", ""), validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise ConfigError(f"bad codec parameters: {err}") from err
        if params.layout not in LAYOUTS:
            raise ConfigError(f"bad codec parameters: unknown layout {params.layout!r}")
        if params.framing not in FRAMINGS:
            raise ConfigError(f"bad codec parameters: unknown framing {params.framing!r}")
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


def train_dictionary(samples: Sequence[bytes], config: CodecConfig) -> bytes:
    """A zstd dictionary from sample rows; empty when there are too few to train on."""
    if config.framing != "row" or not config.dictionary or len(samples) < 8:
        return b""
    try:
        size = min(DICT_MAX_BYTES, sum(len(s) for s in samples) // 100)
        if size < DICT_MIN_BYTES:
            return b""
        buffers: list[bytes | bytearray | memoryview] = list(samples)
        d = zstandard.train_dictionary(size, buffers, level=config.level)
    except zstandard.ZstdError:
        return b""  # zstd refuses samples that are too small or too uniform to learn from
    return d.as_bytes()


class Codec:
    """Rows of codes to ``vz_codes`` payloads and back, for one archive's parameters
    (not thread-safe)."""

    def __init__(self, params: CodecParams) -> None:
        self.params = params
        d = zstandard.ZstdCompressionDict(params.dictionary) if params.dictionary else None
        self._c = zstandard.ZstdCompressor(
            level=params.level, dict_data=d, write_checksum=False, write_content_size=True
        )
        self._d = zstandard.ZstdDecompressor(dict_data=d)

    def encode(self, codes: np.ndarray) -> tuple[list[bytes], list[int]]:
        """(N, C, P) codes -> N payloads for ``vz_codes`` and the N checksums."""
        rows = row_bytes(codes, self.params.layout)
        crcs = [checksum(r) for r in rows]
        return [self.encode_raw(r) for r in rows], crcs

    def encode_raw(self, raw: bytes) -> bytes:
        """One row's uncompressed code bytes -> its ``vz_codes`` payload."""
        return self._c.compress(raw) if self.params.framing == "row" else raw

    def raw(self, payload: bytes, expected: int | None = None) -> bytes:
        """A ``vz_codes`` value -> the row's uncompressed code bytes. With ``expected`` (what
        the row's latent shape says it holds), a frame that declares another size is refused
        before anything is allocated for it: a 258 KB frame can claim 8 GB."""
        if self.params.framing != "row":
            return payload
        if expected is not None:
            declared = zstandard.frame_content_size(payload)
            if declared != expected:
                raise ValueError(
                    f"the frame declares {declared:,} bytes, the latent shape needs {expected:,}"
                )
        return self.decompress(payload)

    def compress(self, rows: list[bytes]) -> list[bytes]:
        return [self._c.compress(r) for r in rows]

    def decompress(self, frame: bytes) -> bytes:
        return self._d.decompress(frame)
