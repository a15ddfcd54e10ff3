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
Why not a library coder: constriction (a well-kept Rust ANS coder, tried first) coded these
rows at 4-11 MB/s of streams from Python, a call per row, where the loops here code whole
batches of rows in one compiled call, as CompressAI's C++ coder does with its tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.codec.ctxcoder import GivenTables, quantize_pmf

GAUSS_RANGE = 255
GAUSS_SPAN = 6.0


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
    def channels(self) -> int:
        return len(self.offsets)

    @cached_property
    def given(self) -> GivenTables:
        tables: list[tuple[int, np.ndarray]] = []
        for low, row in zip(self.offsets.tolist(), self.probs, strict=True):
            tables.append((low, quantize_pmf(np.append(row, max(1e-12, 1.0 - row.sum())))))
        for sigma in self.ladder.tolist():
            reach = min(GAUSS_RANGE, math.ceil(GAUSS_SPAN * sigma))
            k = np.arange(-reach, reach + 1, dtype=np.float64)
            cdf = np.vectorize(lambda v, s=sigma: 0.5 * math.erfc(-v / (s * math.sqrt(2.0))))
            pmf = cdf(k + 0.5) - cdf(k - 0.5)
            tables.append((-reach, quantize_pmf(np.append(pmf, max(1e-12, 1.0 - pmf.sum())))))
        width = max(len(f) for _, f in tables)
        freqs = np.zeros((len(tables), width), dtype=np.int64)
        for i, (_, f) in enumerate(tables):
            freqs[i, : len(f)] = f
        lows = np.array([low for low, _ in tables])
        return GivenTables(lows=lows, sizes=np.array([len(f) for _, f in tables]), freqs=freqs)


def _row_ends(rows: int, per: int) -> np.ndarray:
    return np.arange(1, rows + 1, dtype=np.int64) * per


def encode_factorized(values: np.ndarray, tables: LearnedTables) -> list[bytes]:
    """``values`` (N, C, P) int64: each row's channels of P rounded latents -> N streams."""
    n, c, p = values.shape
    if c != tables.channels:
        raise ValueError(f"{c} channels of values, the prior has {tables.channels}")
    tabs = np.broadcast_to(np.arange(c)[None, :, None], values.shape)
    return tables.given.encode(values.reshape(-1), tabs.reshape(-1), _row_ends(n, c * p))


def decode_factorized(streams: list[bytes], tables: LearnedTables, positions: int) -> np.ndarray:
    """N streams -> (N, C, positions) values."""
    n, c = len(streams), tables.channels
    tabs = np.broadcast_to(np.arange(c)[None, :, None], (n, c, positions)).reshape(-1)
    return tables.given.decode(streams, tabs, _row_ends(n, c * positions)).reshape(n, c, positions)


def encode_gaussian(values: np.ndarray, indexes: np.ndarray, tables: LearnedTables) -> list[bytes]:
    """``values`` and ``indexes`` (N, ...) of one shape: each rounded latent and the ladder
    step of its standard deviation -> N streams."""
    n = len(values)
    per = values[0].size if n else 0
    tabs = tables.channels + indexes.reshape(-1)
    return tables.given.encode(values.reshape(-1), tabs, _row_ends(n, per))


def decode_gaussian(streams: list[bytes], indexes: np.ndarray, tables: LearnedTables) -> np.ndarray:
    n = len(streams)
    per = indexes[0].size if n else 0
    tabs = tables.channels + indexes.reshape(-1)
    return tables.given.decode(streams, tabs, _row_ends(n, per)).reshape(indexes.shape)
