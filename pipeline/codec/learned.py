"""Entropy coding for a learned codec: an RD model's priors as integer tables, rows coded
with rANS under them (pipeline.codec.ctxcoder's given-table loops).

An RD model (pipeline.model.nets.rd) rounds its latents and codes them under the densities it
learned with them. The coder sees only integer frequency tables (``LearnedTables.given``)
and integer arrays, so encoder and decoder agree bit for bit:

- factorized: table ``c`` is channel ``c``'s probabilities over its support;
- gaussian: table ``C + t`` is a zero-mean Gaussian convolved with the unit box, of the
  ladder's standard deviation ``t`` (the hyperprior rounds each predicted scale up to a
  step), over +-``GAUSS_SPAN`` of those deviations (at most ``GAUSS_RANGE``);
- a value outside its table, or too unlikely for a 12-bit frequency, is sent as the table's
  escape and then as two 16-bit words.

Every row is one stream of its own, so a row decodes alone; many rows are coded in one call.
Under a hyperprior a row's stream holds its side information and then its latent, one rANS
state running through both: the decoder takes every row's side information, runs one
hyper-synthesis for all of them, and goes on with each row from where it stopped.
Why not a library coder: constriction (a well-kept Rust ANS coder, tried first) coded these
rows at 4-11 MB/s of streams from Python, a call per row, where the loops here code whole
batches of rows in one compiled call, as CompressAI's C++ coder does with its tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import zstandard

from pipeline.codec.ctxcoder import GIVEN_BITS, GivenTables, quantize_pmf

GAUSS_RANGE = 255
GAUSS_SPAN = 6.0
# The hyperprior's tables keep a slot (at least 1 of 2**12) for every value within GAUSS_NEAR
# of zero and every one with at least GAUSS_UNIT of a unit of mass. A briefly trained
# hyperprior is overconfident: with its deviations at the floor (0.11), where a Gaussian
# gives +-1 a chance of 3e-6, 0.9% of a demo photo rd model's latents were +-1 and +-2, each
# an escape of about 44 bits; with these slots they cost about 12 and the main streams took
# 157 bytes a held-out crop against 210 (1/32 of a unit and no near slots; the priors' own
# likelihoods: 166). The factorized tables keep 1/32: lower floors cost them 1-6%.
GAUSS_NEAR = 2
GAUSS_UNIT = 1 / 256


@dataclass(frozen=True)
class LearnedTables:
    offsets: np.ndarray  # (C,) int64: the first integer of each factorized channel's table
    probs: np.ndarray  # (C, S) float64: probabilities of offset + 0 ... offset + S - 1
    ladder: np.ndarray  # (L,) float64: the standard deviations a scale index picks

    def __post_init__(self) -> None:
        if self.probs.ndim != 2 or len(self.offsets) != len(self.probs):
            raise ValueError("a table per channel: offsets (C,) and probabilities (C, S)")
        if not (np.isfinite(self.probs).all() and (self.probs >= 0).all() and (self.ladder > 0).all()):
            raise ValueError("probabilities must be finite and non-negative, scales positive")

    @property
    def prior_channels(self) -> int:
        """The factorized tables' count (the first tables; the Gaussian ladder's follow)."""
        return len(self.offsets)

    @cached_property
    def given(self) -> GivenTables:
        tables: list[tuple[int, np.ndarray]] = []
        for low, row in zip(self.offsets.tolist(), self.probs, strict=True):
            tables.append((low, quantize_pmf(np.append(row, max(1e-12, 1.0 - row.sum())))))
        unit = 1 / (1 << GIVEN_BITS) * GAUSS_UNIT  # a unit's share: the floor as a probability
        for sigma in self.ladder.tolist():
            reach = min(GAUSS_RANGE, max(GAUSS_NEAR, math.ceil(GAUSS_SPAN * sigma)))
            k = np.arange(-reach, reach + 1, dtype=np.float64)
            cdf = np.vectorize(lambda v, s=sigma: 0.5 * math.erfc(-v / (s * math.sqrt(2.0))))
            pmf = cdf(k + 0.5) - cdf(k - 0.5)
            pmf = np.where(np.abs(k) <= GAUSS_NEAR, np.maximum(pmf, 2 * unit), pmf)
            pmf = np.append(pmf, max(1e-12, 1.0 - pmf.sum()))
            tables.append((-reach, quantize_pmf(pmf, unit=GAUSS_UNIT)))
        width = max(len(f) for _, f in tables)
        freqs = np.zeros((len(tables), width), dtype=np.int64)
        for i, (_, f) in enumerate(tables):
            freqs[i, : len(f)] = f
        lows = np.array([low for low, _ in tables])
        return GivenTables(lows=lows, sizes=np.array([len(f) for _, f in tables]), freqs=freqs)


def _row_ends(rows: int, per: int) -> np.ndarray:
    return np.arange(1, rows + 1, dtype=np.int64) * per


class Hyper(Protocol):
    """An rd hyperprior's two steps the codec needs of the model (pipeline.data.rd_rows)."""

    def side(self, y: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents, before rounding where the caller has them (the hyper-analysis
        was trained on those) -> (N, Cz, ceil(h/4), ceil(w/4)) rounded side latents."""
        ...

    def indexes(self, z: np.ndarray, height: int, width: int) -> np.ndarray:
        """Side latents -> (N, C, height, width) ladder steps of the latents' tables."""
        ...


class Tables(Protocol):
    @property
    def given(self) -> GivenTables: ...

    @property
    def prior_channels(self) -> int: ...


def _channel_tabs(rows: int, channels: int, positions: int) -> np.ndarray:
    """Flat table indexes of ``rows`` rows of ``channels`` x ``positions`` values, channel c
    under table c (uint8 where they fit: the decoder reads them as they are)."""
    kind = np.uint8 if channels <= 256 else np.int64
    return np.broadcast_to(
        np.arange(channels, dtype=kind)[None, :, None], (rows, channels, positions)
    ).reshape(-1)


def encode_factorized(values: np.ndarray, tables: Tables) -> list[bytes]:
    """``values`` (N, C, P) int64: each row's channels of P rounded latents -> N streams."""
    n, c, p = values.shape
    if c != tables.prior_channels:
        raise ValueError(f"{c} channels of values, the prior has {tables.prior_channels}")
    return tables.given.encode(values.reshape(-1), _channel_tabs(n, c, p), _row_ends(n, c * p))


def decode_factorized(streams: list[bytes], tables: Tables, positions: int) -> np.ndarray:
    """N streams -> (N, C, positions) values."""
    n, c = len(streams), tables.prior_channels
    tabs = _channel_tabs(n, c, positions)
    return tables.given.decode(streams, tabs, _row_ends(n, c * positions)).reshape(n, c, positions)


def encode_gaussian(values: np.ndarray, indexes: np.ndarray, tables: Tables) -> list[bytes]:
    """``values`` and ``indexes`` (N, ...) of one shape: each rounded latent and the ladder
    step of its standard deviation -> N streams."""
    n = len(values)
    per = values[0].size if n else 0
    tabs = tables.prior_channels + indexes.reshape(-1)
    return tables.given.encode(values.reshape(-1), tabs, _row_ends(n, per))


def decode_gaussian(streams: list[bytes], indexes: np.ndarray, tables: Tables) -> np.ndarray:
    n = len(streams)
    per = indexes[0].size if n else 0
    out = tables.given.decode(streams, indexes.reshape(-1), _row_ends(n, per), base=tables.prior_channels)
    return out.reshape(indexes.shape)


def encode_rows(
    y: np.ndarray, tables: Tables, hyper: Hyper | None, latents: np.ndarray | None = None
) -> list[bytes]:
    """Rounded latents ``y`` (N, C, h, w) -> one stream a row (the tables' version 2): under
    the factorized prior; or, under a hyperprior, the side information z (of ``latents``, the
    latents before rounding, where the caller has them) and then y under the tables h_s(z)
    picks, one rANS state running through both (a row pays for one final state, not two)."""
    n, c, h, w = y.shape
    if hyper is None:
        return encode_factorized(y.reshape(n, c, h * w), tables)
    z = hyper.side(y if latents is None else latents)
    cz = tables.prior_channels
    if z.shape[1] != cz:
        raise ValueError(f"{z.shape[1]} side channels, the prior has {cz}")
    ztabs = _channel_tabs(n, cz, z[0, 0].size).reshape(n, -1)
    values = np.concatenate([z.reshape(n, -1), y.reshape(n, -1)], axis=1)
    tabs = np.concatenate([ztabs, cz + hyper.indexes(z, h, w).reshape(n, -1)], axis=1)
    return tables.given.encode(values.reshape(-1), tabs.reshape(-1), _row_ends(n, values.shape[1]))


def decode_streams(
    streams: list[bytes], tables: Tables, hyper: Hyper | None, height: int, width: int
) -> np.ndarray:
    """Rows of one latent shape coded by ``encode_rows`` -> their latents (N, C, height * width):
    under a hyperprior every row's side information first, one hyper-synthesis for all of them,
    then the rest of each stream under the tables it picks."""
    if hyper is None:
        return decode_factorized(streams, tables, height * width)
    n, cz = len(streams), tables.prior_channels
    zh, zw = -(-height // 4), -(-width // 4)
    z, stop = tables.given.decode_head(streams, _channel_tabs(n, cz, zh * zw), _row_ends(n, cz * zh * zw))
    indexes = hyper.indexes(z.reshape(n, cz, zh, zw), height, width)
    y = tables.given.decode(
        streams, indexes.reshape(-1), _row_ends(n, indexes[0].size), tables.prior_channels, stop
    )
    return y.reshape(n, -1, height * width)


def decode_rows(
    sides: list[bytes], mains: list[bytes], tables: Tables, hyper: Hyper | None, height: int, width: int
) -> np.ndarray:
    """Rows of one latent shape in two streams each (the tables' version 1: archives written
    before 2026-12-03) -> their latents (N, C, height * width): under the factorized prior, or
    every side stream first, one hyper-synthesis for all of them, then the main streams under
    the tables it picks."""
    if hyper is None:
        return decode_factorized(mains, tables, height * width)
    zh, zw = -(-height // 4), -(-width // 4)
    z = decode_factorized(sides, tables, zh * zw).reshape(len(sides), -1, zh, zw)
    return decode_gaussian(mains, hyper.indexes(z, height, width), tables).reshape(
        len(mains), -1, height * width
    )


# ---- what an archive stores of them (codec "learned", FORMAT.md) --------------------------

ZERO = 32768  # a stored code is the rounded latent plus this (the "rounded" quantizer's codes)
# 2 (since 2026-12-03): one stream a row (``encode_rows``); 1: a side and a main stream, the
# side's length first as a varint (``decode_rows``). Both read; an archive keeps its own.
BLOB_VERSION = 2
BLOB_VERSIONS = (1, 2)
MAX_TABLES = 4096
MAX_TABLE_WIDTH = 1 << 16


def tables_to_bytes(
    given: GivenTables, channels: int, hyper_channels: int, version: int = BLOB_VERSION
) -> bytes:
    """The integer tables and the latent's layout, for the archive's footer: JSON, the
    frequencies as little-endian uint16 (a 12-bit frequency fits), zstd-compressed;
    ``version`` says how its rows are laid out (``BLOB_VERSION``)."""
    if version not in BLOB_VERSIONS:
        raise ValueError(f"learned tables version {version}")
    freqs = given.freqs.astype("<u2")
    header = {
        "version": version,
        "channels": channels,
        "hyper_channels": hyper_channels,
        "zero": ZERO,
        "bits": GIVEN_BITS,
        "lows": given.lows.tolist(),
        "sizes": given.sizes.tolist(),
        "width": int(freqs.shape[1]),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = zstandard.ZstdCompressor(level=19).compress(freqs.tobytes())
    return len(head).to_bytes(4, "little") + head + body


@dataclass(frozen=True)
class StoredTables:
    given: GivenTables
    channels: int  # of the latent y
    hyper_channels: int  # of the hyper-latent z; 0 for a factorized prior
    version: int = BLOB_VERSION  # how a row is laid out: one stream (2) or two (1)

    @property
    def prior_channels(self) -> int:
        """The factorized tables' count: z's channels under a hyperprior, else y's."""
        return self.hyper_channels or self.channels


def tables_from_bytes(data: bytes) -> StoredTables:
    """Untrusted footer bytes -> the tables, every claim checked before it is used."""
    try:
        n = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + n])
        if header.get("version") not in BLOB_VERSIONS or header.get("bits") != GIVEN_BITS:
            raise ValueError(f"learned tables version {header.get('version')}, {header.get('bits')}-bit")
        lows, sizes = np.array(header["lows"], np.int64), np.array(header["sizes"], np.int64)
        width, channels, hyper = int(header["width"]), int(header["channels"]), int(header["hyper_channels"])
        if not (0 < len(lows) <= MAX_TABLES and 0 < width <= MAX_TABLE_WIDTH and header["zero"] == ZERO):
            raise ValueError("table counts out of range")
        if not (0 < channels < len(lows) + 1 and 0 <= hyper < len(lows)):
            raise ValueError("channel counts do not fit the tables")
        raw = zstandard.ZstdDecompressor().decompress(data[4 + n :], max_output_size=2 * width * len(lows))
        freqs = np.frombuffer(raw, dtype="<u2").reshape(len(lows), width)
        return StoredTables(GivenTables(lows, sizes, freqs), channels, hyper, int(header["version"]))
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as err:
        raise ValueError(f"unreadable learned-codec tables ({err})") from err


def split_varint(payload: bytes) -> tuple[int, int]:
    """A payload's leading unsigned LEB128 varint: (its value, where the rest starts)."""
    value = shift = 0
    for i, b in enumerate(payload[:10]):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if value > len(payload):
                raise ValueError(f"a side stream of {value:,} bytes in a payload of {len(payload):,}")
            return value, i + 1
        shift += 7
    raise ValueError("the payload does not start with its side stream's length")
