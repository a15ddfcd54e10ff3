"""Quantizer steps chosen by decoded quality: ``--max-loss-db D``.

The loss is what quantizing costs in the decoder's output: with ``y0`` the decoder's output
from the unquantized latents and ``yq`` from the quantized ones, against the model's input
``x`` (all in the model's 0..1 units, pooled over rows),

    loss_db = 10 * log10(mse(x, yq) / mse(x, y0))     (the PSNR drop, in dB)

Calibration, on a sample the workers read:

1. Split the rows: even rows fit, odd rows check (the check rows are never fitted on).
2. Per channel c, quantize that channel alone with a trial step and measure the mean squared
   change it makes in the decoder's output: its gain ``g_c`` (error per unit of step**2 / 12).
3. Equal slope: at high rate a channel costs ``-log2(step)`` bits per value and adds
   ``g_c * step**2 / 12`` of error, so the fewest bits for a given error give every channel the
   same share of it: ``step_c = alpha / sqrt(g_c)``.
4. ``alpha``: the gains predict the quantizing error, ``C alpha**2 / 12`` per output value for
   C channels, hence the ``alpha`` that meets D; a bisection around that guess on the fit rows
   finds the largest whose expected loss (the quantizing error alone, ``expected_loss_db``)
   stays within D; then the check rows are measured, and ``alpha`` shrinks until they are
   within D too, as measured and as expected.

The rows decoded are ``rows_to_decode`` of them (about 12 decodes of each fit row and 2 of
each check row, plus one per channel for the gains): as many as hold ``DECODE_VALUES`` model
values, at least ``MIN_ROWS``: all 2,048 calibration digits, 682 of the demo's 64x64 photo
crops (on 2 CPU cores, an encode of the 4,671 training crops took 20 s against 15 s with
the posterior step, measured when 512 rows were decoded), 256 SD-sized 512x512 images (on a GPU). The
more check rows, the closer their loss is to the whole dataset's (BENCHMARKS.md, "Reported
loss against verified loss").

The measured loss on the check rows and the codes' entropy there (bits per latent value, the
order-0 bound a per-channel entropy coder would reach) go into the quantizer's parameters,
hence into job.json, every archive file's metadata and the job summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from pipeline.codec.quantize import RANGE_MARGIN, QuantizerParams, dequantize, quantize

# decode(z) for a batch of latents of one shape (N, C, ...) -> model outputs (N, ...)
Decode = Callable[[np.ndarray], np.ndarray]
MAX_LEVELS = 1 << 16
BISECTION_STEPS = 10
DECODE_VALUES = 1 << 23
MIN_ROWS = 256


def rows_to_decode(values_per_row: int) -> int:
    return max(MIN_ROWS, DECODE_VALUES // max(values_per_row, 1))


@dataclass(frozen=True)
class Rows:
    """Calibration rows of one latent and sample shape."""

    x: np.ndarray  # (N, ...) model inputs
    z: np.ndarray  # (N, C, ...) posterior means
    decode: Decode


def _flat(z: np.ndarray) -> np.ndarray:
    return z.reshape(z.shape[0], z.shape[1], -1)


def _params(lo: np.ndarray, hi: np.ndarray, step: np.ndarray, active: np.ndarray) -> QuantizerParams:
    step = np.maximum(step, (hi - lo) / (MAX_LEVELS - 1))
    levels = np.minimum(np.floor((hi - lo) / step).astype(np.int64) + 1, MAX_LEVELS)
    return QuantizerParams(
        mode="loss",
        lo=tuple(float(v) for v in lo),
        step=tuple(float(v) for v in step),
        levels=tuple(int(max(v, 2)) for v in levels),
        active=tuple(bool(v) for v in active),
    )


def _quantized(rows: Rows, params: QuantizerParams) -> np.ndarray:
    codes, _ = quantize(_flat(rows.z), params)
    return dequantize(codes, params).reshape(rows.z.shape)


def losses(groups: list[Rows], params: QuantizerParams, y0: list[np.ndarray]) -> tuple[float, float, float]:
    """(measured, expected, standard error of measured) loss in dB from one decode of
    ``groups``: measured is the PSNR drop itself, ``10 log10(mse(x, yq) / mse(x, y0))``;
    expected is the drop the quantizing error alone makes, ``10 log10(1 + mse(y0, yq) /
    mse(x, y0))``, what the measured drop is on average without the cross term between the
    model's own error and the quantizing error, which is noise of either sign on a sample of
    rows and would make a search wander (a coarser step can even measure better). The standard
    error (delta method on the ratio of per-row summed squared errors) says how far another
    sample of rows could put the measured drop."""
    q_rows, o_rows, change = [], [], 0.0
    for rows, y in zip(groups, y0, strict=True):
        yq = rows.decode(_quantized(rows, params))
        q_rows.append(((rows.x - yq) ** 2).reshape(len(rows.x), -1).sum(axis=1, dtype=np.float64))
        o_rows.append(((rows.x - y) ** 2).reshape(len(rows.x), -1).sum(axis=1, dtype=np.float64))
        change += float(np.sum((yq - y) ** 2))
    q, o = np.concatenate(q_rows), np.concatenate(o_rows)
    quant, base = max(float(q.sum()), 1e-30), max(float(o.sum()), 1e-30)
    ratio = quant / base
    se = 0.0
    if len(q) >= 2:
        se_ratio = math.sqrt(len(q) * float(np.var(q - ratio * o, ddof=1))) / base
        se = 10 / math.log(10) * se_ratio / ratio
    return 10 * math.log10(ratio), 10 * math.log10(1 + change / base), se


def loss_db(groups: list[Rows], params: QuantizerParams, y0: list[np.ndarray]) -> float:
    """The PSNR drop as measured (``losses``)."""
    return losses(groups, params, y0)[0]


def expected_loss_db(groups: list[Rows], params: QuantizerParams, y0: list[np.ndarray]) -> float:
    """The PSNR drop the quantizing error alone makes (``losses``)."""
    return losses(groups, params, y0)[1]


def bits_per_value(groups: list[Rows], params: QuantizerParams) -> float:
    """Order-0 entropy of the codes, per channel, averaged over the stored latent values."""
    codes = np.concatenate(
        [np.moveaxis(quantize(_flat(r.z), params)[0], 1, 0).reshape(sum(params.active), -1) for r in groups],
        axis=1,
    )
    total = 0.0
    for channel in codes:
        _, counts = np.unique(channel, return_counts=True)
        p = counts / counts.sum()
        total += float(-(p * np.log2(p)).sum())
    return total / max(len(codes), 1)


def _split(groups: list[Rows]) -> tuple[list[Rows], list[Rows]]:
    fit, check = [], []
    for r in groups:
        if len(r.x) >= 2:
            fit.append(Rows(r.x[0::2], r.z[0::2], r.decode))
            check.append(Rows(r.x[1::2], r.z[1::2], r.decode))
        else:
            fit.append(r)
    return fit, check or fit


def _at_most(groups: list[Rows], n: int) -> list[Rows]:
    """The first ``n`` rows of the groups, in order."""
    out = []
    for r in groups:
        if n <= 0:
            break
        out.append(Rows(r.x[:n], r.z[:n], r.decode))
        n -= len(r.x)
    return out


def calibrate_loss(groups: list[Rows], max_loss_db: float, active: np.ndarray) -> QuantizerParams:
    """Per-channel steps meeting ``max_loss_db`` on rows not fitted on, with the fewest bits.
    ``active``: the channels to store (the others decode as 0, the prior mean)."""
    fit, check = _split(_at_most(groups, rows_to_decode(groups[0].x[0].size if groups else 1)))
    # (C, every value of the channel): groups may differ in positions (tiles at an edge)
    flat = np.concatenate([np.moveaxis(_flat(r.z), 1, 0).reshape(r.z.shape[1], -1) for r in groups], axis=1)
    mn, mx = flat.min(axis=1), flat.max(axis=1)
    lo, hi = mn - RANGE_MARGIN * (mx - mn), mx + RANGE_MARGIN * (mx - mn) + 1e-6
    y0_fit = [r.decode(r.z) for r in fit]
    # 2. each channel's gain, from a trial step of a tenth of its spread
    trial = np.maximum(flat.std(axis=1) / 10, 1e-6)
    gains = np.zeros(len(lo))
    n = sum(r.x.size for r in fit)
    for c in np.flatnonzero(active):
        change = 0.0
        for r, y in zip(fit, y0_fit, strict=True):
            z = r.z.copy()  # channel c quantized alone, every other channel as it is
            z[:, c] = lo[c] + np.rint((z[:, c] - lo[c]) / trial[c]) * trial[c]
            change += float(np.sum((r.decode(z) - y) ** 2))
        gains[c] = change / n / (trial[c] ** 2 / 12)
    gains = np.maximum(gains, 1e-12)

    def steps(alpha: float) -> QuantizerParams:
        return _params(lo, hi, alpha / np.sqrt(gains), active)

    # 3-4. equal slope, scaled: the gains' guess, bracketed, then bisection on log(alpha)
    base = sum(float(np.sum((r.x - y) ** 2)) for r, y in zip(fit, y0_fit, strict=True)) / n
    allowed = max(base, 1e-12) * (10 ** (max_loss_db / 10) - 1)
    guess = math.log(math.sqrt(12 * allowed / max(int(np.count_nonzero(active)), 1)))

    def within(log_alpha: float) -> bool:
        return expected_loss_db(fit, steps(math.exp(log_alpha)), y0_fit) <= max_loss_db

    lo_a, hi_a = guess - 1.0, guess + 1.0
    for _ in range(8):  # widen until the bracket holds the answer
        if within(lo_a):
            break
        lo_a, hi_a = lo_a - 2.0, lo_a
    for _ in range(8):
        if not within(hi_a):
            break
        lo_a, hi_a = hi_a, hi_a + 2.0
    for _ in range(BISECTION_STEPS):
        mid = (lo_a + hi_a) / 2
        if within(mid):
            lo_a = mid
        else:
            hi_a = mid
    alpha = math.exp(lo_a)
    y0_check = [r.decode(r.z) for r in check]
    params = steps(alpha)
    measured, expected, se = losses(check, params, y0_check)
    for _ in range(20):  # the check rows must hold the bound, as measured and as expected
        if max(measured, expected) <= max_loss_db:
            break
        alpha *= 0.9
        params = steps(alpha)
        measured, expected, se = losses(check, params, y0_check)
    return replace(
        params,
        target_loss_db=max_loss_db,
        measured_loss_db=round(measured, 4),
        bits_per_value=round(bits_per_value(check, params), 4),
        measured_loss_se_db=round(se, 4),
    )
