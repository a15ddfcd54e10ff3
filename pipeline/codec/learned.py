"""Entropy coding for a learned codec (an RD model's priors): the one door to constriction.

An RD model (pipeline.model.nets.rd) rounds its latents and codes them under the densities it
learned with them. The coder sees only tables computed once from the model in float64
(``LearnedTables``) and integer arrays, so encoder and decoder agree bit for bit:

- factorized: each channel's integers under that channel's probability table (its support
  plus an escape symbol); a value outside the support is sent as the escape and then as two
  uniform 16-bit words (zigzagged) after every channel's symbols;
- gaussian: each value under a zero-mean Gaussian (convolved with the unit box) whose
  standard deviation is the ladder step the hyperprior chose for it, clipped to
  ``[-GAUSS_RANGE, GAUSS_RANGE]``; values at or past the edge escape the same way.

Each call codes one row into one ANS stream (constriction's ``AnsCoder``, 32-bit words), so
a row decodes alone. constriction (Bamler, 2022) is a Rust library of entropy coders with
exactly invertible fixed-point models; the learned densities are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np

GAUSS_RANGE = 255
_model = constriction.stream.model
_WORD = _model.Uniform(1 << 16)


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

    @cached_property
    def channel_models(self) -> list:
        """One categorical model per channel: its table, then the escape (least probability)."""
        escape = np.zeros((len(self.probs), 1))
        return [_model.Categorical(row, perfect=False) for row in np.hstack([self.probs, escape])]

    @cached_property
    def gaussian(self) -> object:
        return _model.QuantizedGaussian(-GAUSS_RANGE, GAUSS_RANGE)


def _zigzag(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.int64)
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2)


def _escape_words(values: np.ndarray) -> np.ndarray:
    z = _zigzag(values)
    if (z >= 1 << 32).any():
        raise ValueError("a latent value beyond 2^31 cannot be coded")
    return np.stack([(z >> 16) & 0xFFFF, z & 0xFFFF], axis=1).reshape(-1).astype(np.int32)


def _escaped_values(words: np.ndarray) -> np.ndarray:
    pairs = words.astype(np.uint64).reshape(-1, 2)
    return _unzigzag((pairs[:, 0] << 16) | pairs[:, 1])


def encode_factorized(values: np.ndarray, tables: LearnedTables) -> bytes:
    """``values`` (C, P) int64: each channel's P rounded latents."""
    channels, span = tables.probs.shape
    if values.ndim != 2 or values.shape[0] != channels:
        raise ValueError(f"expected ({channels}, P) values, got {values.shape}")
    symbols = values - tables.offsets[:, None]
    outside = (symbols < 0) | (symbols >= span)
    coder = constriction.stream.stack.AnsCoder()
    if outside.any():
        coder.encode_reverse(_escape_words(values[outside]), _WORD)
    symbols = np.where(outside, span, symbols).astype(np.int32)
    for c in reversed(range(channels)):
        coder.encode_reverse(symbols[c], tables.channel_models[c])
    return coder.get_compressed().tobytes()


def decode_factorized(data: bytes, tables: LearnedTables, positions: int) -> np.ndarray:
    channels, span = tables.probs.shape
    coder = constriction.stream.stack.AnsCoder(_words(data))
    symbols = np.stack([coder.decode(tables.channel_models[c], positions) for c in range(channels)]).astype(
        np.int64
    )
    values = symbols + tables.offsets[:, None]
    escaped = symbols == span
    if escaped.any():
        values[escaped] = _escaped_values(coder.decode(_WORD, 2 * int(escaped.sum())))
    return values


def encode_gaussian(values: np.ndarray, indexes: np.ndarray, tables: LearnedTables) -> bytes:
    """``values`` and ``indexes`` (any shape, the same): each rounded latent and the ladder
    step of its standard deviation."""
    flat, stds = values.reshape(-1), tables.ladder[indexes.reshape(-1)]
    outside = np.abs(flat) >= GAUSS_RANGE
    coder = constriction.stream.stack.AnsCoder()
    if outside.any():
        coder.encode_reverse(_escape_words(flat[outside]), _WORD)
    symbols = np.clip(flat, -GAUSS_RANGE, GAUSS_RANGE).astype(np.int32)
    coder.encode_reverse(symbols, tables.gaussian, np.zeros(len(flat)), stds)
    return coder.get_compressed().tobytes()


def decode_gaussian(data: bytes, indexes: np.ndarray, tables: LearnedTables) -> np.ndarray:
    flat = indexes.reshape(-1)
    coder = constriction.stream.stack.AnsCoder(_words(data))
    values = coder.decode(tables.gaussian, np.zeros(len(flat)), tables.ladder[flat]).astype(np.int64)
    escaped = np.abs(values) >= GAUSS_RANGE
    if escaped.any():
        values[escaped] = _escaped_values(coder.decode(_WORD, 2 * int(escaped.sum())))
    return values.reshape(indexes.shape)


def _words(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise ValueError(f"a stream of {len(data)} bytes is not whole 32-bit words")
    return np.frombuffer(data, dtype=np.uint32).copy()
