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
import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from pipeline.codec.ctxcoder import CtxCoder, RowError, declared_channels, encode_varints, fit
from pipeline.codec.learned import ZERO as LEARNED_ZERO
from pipeline.codec.learned import (
    Hyper,
    StoredTables,
    decode_rows,
    decode_streams,
    encode_factorized,
    encode_gaussian,
    encode_rows,
    split_varint,
    tables_from_bytes,
)
from pipeline.core.errors import ConfigError

CODECS = ("zstd", "rans", "learned")  # learned: an rd model's own priors (pipeline.codec.learned)
LAYOUTS = ("channel", "position")
TRANSFORMS = ("none", "fold")
FRAMINGS = ("column", "row")
# A dictionary pays for itself only when it is small next to the data it serves; zstd's own
# advice is about a hundredth of the sample. Capped at 16 KiB, floored at 256 bytes.
DICT_MAX_BYTES = 16 * 1024
DICT_MIN_BYTES = 256


@dataclass(frozen=True)
class CodecConfig:
    level: int = 9  # zstd's level (codec "rans": the level of the column chunk its rows sit in)
    layout: str = "auto"  # or one of LAYOUTS; auto: the smaller on the calibration rows
    framing: str = "column"
    dictionary: bool = True  # row framing only: a zstd dictionary shared by every frame
    transform: str = "fold"
    name: str = "zstd"  # or "rans": the context-model coder (pipeline.codec.ctxcoder)

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ConfigError(f"codec must be one of {CODECS}, got {self.name!r}")
        if self.framing not in FRAMINGS:
            raise ConfigError(f"codec framing must be one of {FRAMINGS}, got {self.framing!r}")
        if self.layout not in (*LAYOUTS, "auto"):
            raise ConfigError(f"codec layout must be auto or one of {LAYOUTS}, got {self.layout!r}")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"codec transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if not 1 <= self.level <= 22:
            raise ConfigError(f"zstd level must be in 1..22, got {self.level}")


@dataclass(frozen=True)
class CodecParams:
    level: int
    layout: str
    framing: str = "column"
    dictionary: bytes = b""  # raw zstd dictionary (row framing); empty for none
    centers: tuple[int, ...] = ()  # transform "fold": one per stored channel; () for none
    name: str = "zstd"
    model: bytes = b""  # codec "rans": the context model (ctxcoder.CtxModel.to_bytes)

    @property
    def transform(self) -> str:
        return "fold" if self.centers else "none"

    @property
    def column_compression(self) -> tuple[str, int | None]:
        """Parquet compression (and level) of the ``vz_codes`` column chunk. A ``rans`` row
        is entropy-coded already; zstd level 1 there takes its 4-byte length prefix down to
        about one byte and passes the rest through as raw blocks."""
        if self.name in ("rans", "learned"):
            return "zstd", 1
        return ("zstd", self.level) if self.framing == "column" else ("none", None)

    def to_dict(self) -> dict:
        if self.name in ("rans", "learned"):
            return {
                "name": self.name,
                "layout": self.layout,
                "framing": self.framing,
                "model_b64": base64.b64encode(self.model).decode(),
            }
        return {
            "name": "zstd",
            "level": self.level,
            "layout": self.layout,
            "framing": self.framing,
            "dictionary_b64": base64.b64encode(self.dictionary).decode(),
            **({"transform": "fold", "centers": list(self.centers)} if self.centers else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CodecParams:
        try:
            if data["name"] in ("rans", "learned"):
                params = cls(
                    level=1,
                    layout=str(data["layout"]),
                    framing=str(data["framing"]),
                    name=str(data["name"]),
                    model=base64.b64decode(data["model_b64"], validate=True),
                )
                if (params.layout, params.framing) != ("channel", "row"):
                    raise ValueError(
                        f"{params.name} codes are channel-major rows, not {params.layout}/{params.framing}"
                    )
                if params.name == "rans":
                    declared_channels(params.model)  # the header; the tables are built when used
                else:
                    tables_from_bytes(params.model)
                return params
            if data["name"] != "zstd":
                raise ValueError(f"unknown codec {data['name']!r}")
            # format v1 had per-row frames only, and no "framing" field
            params = cls(
                level=int(data["level"]),
                layout=str(data["layout"]),
                framing=str(data.get("framing", "row")),
                dictionary=base64.b64decode(data.get("dictionary_b64", ""), validate=True),
                centers=tuple(int(v) for v in data.get("centers", ())),
            )
            if data.get("transform", "none") != params.transform:  # files before it: none
                raise ValueError(f"transform {data.get('transform')!r} with {len(params.centers)} centers")
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise ConfigError(f"bad codec parameters: {err}") from err
        if params.layout not in LAYOUTS:
            raise ConfigError(f"bad codec parameters: unknown layout {params.layout!r}")
        if params.framing not in FRAMINGS:
            raise ConfigError(f"bad codec parameters: unknown framing {params.framing!r}")
        return params


def fold(codes: np.ndarray, centers: Sequence[int], inverse: bool = False) -> np.ndarray:
    """A bijection of each channel's codes onto the code type's range that puts the values
    near the channel's center first: center, +1, -1, +2, -2, ... and, past the nearer end of
    the range, the rest of the farther side in order. Every channel's likely values become the
    same small numbers, which zstd's one literal table per block codes far better than the
    channels' own offsets (FORMAT.md, "transform"). ``codes``: (N, C, P); ``inverse`` undoes it.
    Done by table lookup, one table per channel (hundreds of MB/s)."""
    tables = _fold_tables(tuple(int(c) for c in centers), codes.dtype.str, inverse)
    out = np.empty_like(codes)
    for c, table in enumerate(tables):
        np.take(table, codes[:, c], out=out[:, c])
    return out


@functools.lru_cache(maxsize=32)
def _fold_tables(centers: tuple[int, ...], dtype: str, inverse: bool) -> np.ndarray:
    """(C, T + 1) lookup tables of ``fold`` for code type ``dtype`` (largest value T)."""
    top = int(np.iinfo(np.dtype(dtype)).max)
    m = np.asarray(centers, dtype=np.int64)[:, None]
    k = np.minimum(m, top - m)
    v = np.arange(top + 1, dtype=np.int64)[None, :]
    if not inverse:
        d = v - m
        out = np.where(np.abs(d) <= k, np.where(d > 0, 2 * d - 1, -2 * d), k + np.abs(d))
    else:
        near = np.where(v % 2 == 1, (v + 1) // 2, -(v // 2))
        far = (v - k) * np.where(top - m > m, 1, -1)
        out = m + np.where(v <= 2 * k, near, far)
    return out.astype(np.dtype(dtype))


def fold_centers(codes: np.ndarray) -> tuple[int, ...]:
    """Each channel's median code, (N, C, P) -> C centers."""
    flat = np.moveaxis(codes, 1, 0).reshape(codes.shape[1], -1)
    return tuple(int(v) for v in np.rint(np.median(flat, axis=1))) if flat.size else ()


def row_bytes(codes: np.ndarray, layout: str, centers: Sequence[int] = ()) -> list[bytes]:
    """(N, C, P) codes -> N little-endian byte strings in the given layout (folded around
    ``centers`` when given)."""
    if len(centers):
        codes = fold(codes, centers)
    arr = codes if layout == "channel" else np.swapaxes(codes, 1, 2)
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
    return [r.tobytes() for r in arr]


def rows_to_codes(
    rows: list[bytes], shape: tuple[int, int], dtype: np.dtype, layout: str, centers: Sequence[int] = ()
) -> np.ndarray:
    """Inverse of ``row_bytes`` for rows sharing one (C, P) shape."""
    c, p = shape
    inner = (c, p) if layout == "channel" else (p, c)
    arr = np.frombuffer(b"".join(rows), dtype=np.dtype(dtype).newbyteorder("<"))
    arr = arr.reshape(len(rows), *inner)
    codes = (arr if layout == "channel" else np.swapaxes(arr, 1, 2)).astype(dtype)
    return fold(codes, centers, inverse=True) if len(centers) else codes


def choose_layout(codes: Sequence[np.ndarray], config: CodecConfig, centers: Sequence[int] = ()) -> str:
    """``config.layout``, or for ``auto`` the layout whose rows zstd (at the job's level, as one
    stream, as Parquet compresses a page) stores in fewer bytes; ``codes``: (N, C, P) groups of
    calibration rows. Which one wins depends on the model: on 2026-11-29's demo photo model
    channel-major took 50,814 bytes against 57,683, on the one before it position-major won."""
    if config.layout != "auto":
        return config.layout
    cctx = zstandard.ZstdCompressor(level=config.level)
    sizes = {
        lay: len(cctx.compress(b"".join(r for c in codes for r in row_bytes(c, lay, centers))))
        for lay in LAYOUTS
    }
    return min(LAYOUTS, key=lambda lay: (sizes[lay], lay != "position"))


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


def latent_width(latent_shape: Sequence[int]) -> int:
    """Positions in one line of a latent: its last dimension (1 for a vector latent)."""
    return int(latent_shape[-1]) if len(latent_shape) > 1 else 1


def calibrate_codec(
    codes: Sequence[np.ndarray], config: CodecConfig, widths: Sequence[int] = ()
) -> CodecParams:
    """The codec's parameters from calibration codes (groups of (N, C, P) rows): the fold
    centers, the layout (``choose_layout``) and, for row framing, the dictionary; for codec
    ``rans`` its context model, fitted on the groups with their latents' line ``widths``
    (``latent_width``; P, one line, where not given)."""
    if config.name == "rans":
        groups = [(c, widths[i] if i < len(widths) else c.shape[2]) for i, c in enumerate(codes) if c.size]
        by: dict[tuple[int, int], list[np.ndarray]] = {}
        for c, w in groups:
            by.setdefault((c.shape[2], w), []).append(c)
        model = fit([(np.concatenate(cs), w) for (_, w), cs in by.items()])
        return CodecParams(level=1, layout="channel", framing="row", name="rans", model=model.to_bytes())
    cat = np.concatenate([c.reshape(c.shape[0], c.shape[1], -1) for c in codes], axis=2) if codes else None
    centers = fold_centers(cat) if config.transform == "fold" and cat is not None else ()
    layout = (
        choose_layout(codes, config, centers)
        if codes
        else ("position" if config.layout == "auto" else config.layout)
    )
    samples = [r for c in codes for r in row_bytes(c, layout, centers)]
    return CodecParams(
        level=config.level,
        layout=layout,
        framing=config.framing,
        dictionary=train_dictionary(samples, config),
        centers=centers,
    )


class Codec:
    """Rows of codes to ``vz_codes`` payloads and back, for one archive's parameters
    (not thread-safe)."""

    def __init__(self, params: CodecParams, hyper: Hyper | None = None) -> None:
        """``hyper``: codec "learned" with an rd hyperprior needs the model's side steps
        (pipeline.data.rd_rows.Hyper): the checkpoint's."""
        self.params = params
        self._ctx = CtxCoder.for_model(params.model) if params.name == "rans" else None
        self._learned = _learned_tables(params.model) if params.name == "learned" else None
        self._hyper = hyper
        d = zstandard.ZstdCompressionDict(params.dictionary) if params.dictionary else None
        self._c = zstandard.ZstdCompressor(
            level=params.level, dict_data=d, write_checksum=False, write_content_size=True
        )
        self._d = zstandard.ZstdDecompressor(dict_data=d)

    def encode(
        self, codes: np.ndarray, width: int = 0, latents: np.ndarray | None = None
    ) -> tuple[list[bytes], list[int]]:
        """(N, C, P) codes, lines of ``width`` positions (0: one line), -> N payloads for
        ``vz_codes`` and the N checksums (of the raw code bytes). ``latents``: the (N, C, P)
        latents the codes were quantized from, where the caller has them: an rd hyperprior
        takes its side information from them (from the codes it costs more bytes)."""
        rows = row_bytes(codes, self.params.layout, self.params.centers)
        crcs = [checksum(r) for r in rows]
        if self._learned is not None:
            return self._encode_learned(codes, width or codes.shape[2], latents), crcs
        if self._ctx is not None:
            return self._ctx.encode(codes, width or codes.shape[2]), crcs
        return [self.encode_raw(r) for r in rows], crcs

    def raws(
        self, payloads: Sequence[bytes], shapes: Sequence[tuple[int, int, int]], dtype: np.dtype
    ) -> list[bytes]:
        """``vz_codes`` values -> the rows' raw code bytes; ``shapes``: each row's (stored
        channels, positions, line width), checked by the caller to fit the payload's claims.
        A bad row raises ``ctxcoder.RowError`` (``.row``: its index here)."""
        if self._learned is not None:
            return self._raws_learned(payloads, shapes, np.dtype(dtype))
        if self._ctx is None:
            out = []
            for i, (payload, (c, p, _)) in enumerate(zip(payloads, shapes, strict=True)):
                try:
                    out.append(self.raw(payload, c * p * np.dtype(dtype).itemsize))
                except Exception as err:  # zstd raises its own error type for corrupt frames
                    raise RowError(i, str(err)) from err
            return out
        raws: list[bytes] = [b""] * len(payloads)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(tuple(shape), []).append(i)  # type: ignore[arg-type]
        for (c, p, w), idx in groups.items():
            try:
                codes = self._ctx.decode([payloads[i] for i in idx], c, p, w, np.dtype(dtype))
            except RowError as err:
                raise RowError(idx[err.row], str(err)) from err
            little = codes.astype(np.dtype(dtype).newbyteorder("<"), copy=False)
            for j, i in enumerate(idx):
                raws[i] = little[j].tobytes()
        return raws

    def _hyper_for(self, tables: StoredTables) -> Hyper | None:
        if tables.hyper_channels and self._hyper is None:
            raise ConfigError(
                "these codes were coded under an rd model's hyperprior: their tables come from the "
                "model, so decoding them needs the checkpoint (jobs.decode, jobs.verify --checkpoint, "
                "ArchiveDataset(checkpoint=...))"
            )
        return self._hyper if tables.hyper_channels else None

    def _encode_learned(self, codes: np.ndarray, width: int, latents: np.ndarray | None) -> list[bytes]:
        assert self._learned is not None
        t = self._learned
        n, c, p = codes.shape
        if c != t.channels or p % width:
            raise ValueError(f"({c}, {p}) codes in lines of {width}: tables for {t.channels} channels")
        values = codes.astype(np.int64) - LEARNED_ZERO
        hyper = self._hyper_for(t)
        y = values.reshape(n, c, p // width, width)
        if latents is not None and latents.shape != codes.shape:
            raise ValueError(f"latents {latents.shape} for codes {codes.shape}")
        unrounded = None if latents is None else latents.reshape(y.shape)
        if t.version >= 2:
            return encode_rows(y, t, hyper, unrounded)
        if hyper is None:  # version 1 (an archive begun before 2026-12-03 goes on as it began)
            return [b"\x00" + m for m in encode_factorized(values, t)]
        z = hyper.side(y if unrounded is None else unrounded)
        mains = encode_gaussian(y, hyper.indexes(z, y.shape[2], width), t)
        sides = encode_factorized(z.reshape(n, z.shape[1], -1), t)
        return [encode_varints([len(s)]) + s + m for s, m in zip(sides, mains, strict=True)]

    def _raws_learned(
        self, payloads: Sequence[bytes], shapes: Sequence[tuple[int, int, int]], dtype: np.dtype
    ) -> list[bytes]:
        assert self._learned is not None
        t = self._learned
        hyper = self._hyper_for(t)
        if dtype != np.dtype(np.uint16):
            raise RowError(0, f"learned codes are uint16, the quantizer says {dtype}")
        raws: list[bytes] = [b""] * len(payloads)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(tuple(shape), []).append(i)  # type: ignore[arg-type]
        for (c, p, w), idx in groups.items():
            if c != t.channels or w < 1 or p % w:
                raise RowError(idx[0], f"({c}, {p}) codes do not fit the tables' {t.channels} channels")
            try:
                if t.version >= 2:
                    values = decode_streams([payloads[i] for i in idx], t, hyper, p // w, w)
                else:
                    values = _decode_two_streams([payloads[i] for i in idx], idx, t, hyper, p // w, w)
            except RowError as err:
                raise RowError(idx[err.row], str(err)) from err
            codes = values + LEARNED_ZERO
            for j, i in enumerate(idx):
                if codes[j].min(initial=0) < 0 or codes[j].max(initial=0) > 0xFFFF:
                    raise RowError(i, "a decoded value falls outside the stored codes' range")
                raws[i] = codes[j].astype("<u2").tobytes()
        return raws

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


def _decode_two_streams(
    payloads: list[bytes], idx: list[int], t: StoredTables, hyper: Hyper | None, height: int, width: int
) -> np.ndarray:
    """Rows of the learned tables' version 1: the side stream's length, the side stream, the
    main stream."""
    sides, mains = [], []
    for payload, i in zip(payloads, idx, strict=True):
        try:
            side_len, start = split_varint(payload)
        except ValueError as err:
            raise RowError(i, str(err)) from err
        sides.append(payload[start : start + side_len])
        mains.append(payload[start + side_len :])
    return decode_rows(sides, mains, t, hyper, height, width)


@functools.lru_cache(maxsize=8)
def _learned_tables(data: bytes) -> StoredTables:
    return tables_from_bytes(data)
