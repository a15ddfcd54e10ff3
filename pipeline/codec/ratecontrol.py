"""Quantizer steps chosen by decoded quality: ``--max-loss-db D``.

The loss is what quantizing costs in the decoder's output: with ``y0`` the decoder's output
from the unquantized latents and ``yq`` from the quantized ones, against the model's input
``x`` (all in the model's 0..1 units, pooled over rows),

    loss_db = 10 * log10(mse(x, yq) / mse(x, y0))     (the PSNR drop, in dB)

Calibration, on a sample the workers read:

1. Split the rows: even rows fit, odd rows check (the check rows are never fitted on).
2. Per channel c, quantize that channel alone with a trial step and measure the mean squared
   change it makes in the decoder's output: its gain ``g_c`` (error per unit of step**2 / 12).
   One decode serves every channel: row i has channel ``i mod C`` quantized, so each gain
   comes from a C-th of the fit rows (a decode per channel cost C decodes of them all); where
   that is under ``MIN_GAIN_ROWS`` rows a channel, as many decodes as give it that many.
3. Equal slope: at high rate a channel costs ``-log2(step)`` bits per value and adds
   ``g_c * step**2 / 12`` of error, so the fewest bits for a given error give every channel the
   same share of it: ``step_c = alpha / sqrt(g_c)``.
4. ``alpha``: the gains predict the quantizing error, ``C alpha**2 / 12`` per output value for
   C channels, hence a first ``alpha`` for D; a search on the fit rows (log error against log
   alpha: a step at the slope seen so far, then a secant between the nearest trials on either
   side of the bound) finds the largest whose expected loss (the quantizing error alone,
   ``expected_loss_db``) is within 95-100% of D, in at most ``SEARCH_STEPS`` decodes (the
   error is not smooth in alpha: on the demo photo model it fell by 9% while alpha grew by
   11%, then rose by 27% over 5%); then the check rows are measured, and ``alpha`` shrinks
   until they are within D too, as measured and as expected.

The rows decoded are ``rows_to_decode`` of them (at most 10 decodes of each fit row, more
gain passes where they are under 32 a channel, and 2 of each check row; usually 8:
BENCHMARKS.md, "What pixel rate control costs", puts the calibration at 2.94x the encode of
its rows on the demo photo model; 4.98x with the bisection and a decode per channel it
replaced): as many as hold ``DECODE_VALUES`` model
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
MIN_GAIN_ROWS = 32  # fit rows each channel's gain is measured on, at least (or every row)
SEARCH_STEPS = 8  # decodes of the fit rows to find the scale of the steps, at most
CLOSE_ENOUGH = 0.95  # ... stopping once the quantizing error is within 95-100% of what D allows
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


def _change(groups: list[Rows], params: QuantizerParams, y0: list[np.ndarray]) -> float:
    """The summed squared change quantizing with ``params`` makes in the decoder's output."""
    return sum(
        float(np.sum((r.decode(_quantized(r, params)) - y) ** 2)) for r, y in zip(groups, y0, strict=True)
    )


def _gains(
    fit: list[Rows], y0: list[np.ndarray], lo: np.ndarray, trial: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """Each channel's gain from as few decodes of the fit rows as give it ``MIN_GAIN_ROWS``
    rows (one, from 32 rows a channel up): in pass p, row i has channel ``active[(i + p) % K]``
    quantized alone with a trial step (every other channel as it is), so each channel's gain
    comes from its share of the rows (a pass a channel, K decodes, where rows are few: on 69
    fit rows and 8 channels, one pass cost 15% more bits than K)."""
    kept = np.flatnonzero(active)
    rows = sum(len(r.z) for r in fit)
    passes = min(len(kept), -(-MIN_GAIN_ROWS * len(kept) // max(rows, 1)))
    change, values = np.zeros(len(lo)), np.zeros(len(lo))
    for p in range(passes):
        i = p
        for r, y in zip(fit, y0, strict=True):
            z = r.z.copy()
            channel = kept[(np.arange(len(z)) + i) % len(kept)]
            for c in kept:
                mine = channel == c
                z[mine, c] = lo[c] + np.rint((z[mine, c] - lo[c]) / trial[c]) * trial[c]
            per_row = ((r.decode(z) - y) ** 2).reshape(len(z), -1).sum(axis=1, dtype=np.float64)
            np.add.at(change, channel, per_row)
            np.add.at(values, channel, r.x[0].size)
            i += len(z)
    gains = np.zeros(len(lo))
    gains[kept] = change[kept] / np.maximum(values[kept], 1) / (trial[kept] ** 2 / 12)
    return np.maximum(gains, 1e-12)


def calibrate_loss(groups: list[Rows], max_loss_db: float, active: np.ndarray) -> QuantizerParams:
    """Per-channel steps meeting ``max_loss_db`` on rows not fitted on, with the fewest bits.
    ``active``: the channels to store (the others decode as 0, the prior mean)."""
    fit, check = _split(_at_most(groups, rows_to_decode(groups[0].x[0].size if groups else 1)))
    # (C, every value of the channel): groups may differ in positions (tiles at an edge)
    flat = np.concatenate([np.moveaxis(_flat(r.z), 1, 0).reshape(r.z.shape[1], -1) for r in groups], axis=1)
    mn, mx = flat.min(axis=1), flat.max(axis=1)
    lo, hi = mn - RANGE_MARGIN * (mx - mn), mx + RANGE_MARGIN * (mx - mn) + 1e-6
    y0_fit = [r.decode(r.z) for r in fit]
    gains = _gains(fit, y0_fit, lo, np.maximum(flat.std(axis=1) / 10, 1e-6), active)
    n = sum(r.x.size for r in fit)

    def steps(alpha: float) -> QuantizerParams:
        return _params(lo, hi, alpha / np.sqrt(gains), active)

    # 3-4. equal slope, scaled: alpha from the gains' guess, then a search on log error against
    # log alpha (the error grows as alpha**2 at high rate, much faster where codes run out):
    # a secant through the nearest points on either side of the bound once both are known
    # (Illinois' regula falsi), else a step at the slope seen so far; it keeps the largest
    # alpha found within the bound
    base = sum(float(np.sum((r.x - y) ** 2)) for r, y in zip(fit, y0_fit, strict=True)) / n
    allowed = max(base, 1e-12) * (10 ** (max_loss_db / 10) - 1)  # the error D allows, per value
    target = math.log(allowed)
    a = 0.5 * math.log(12 * allowed / max(int(np.count_nonzero(active)), 1))
    below: tuple[float, float] | None = None  # (log alpha, log error) within the bound
    above: tuple[float, float] | None = None  # ... and beyond it
    last: tuple[float, float] | None = None
    for _ in range(SEARCH_STEPS):
        e = math.log(max(_change(fit, steps(math.exp(a)), y0_fit) / n, 1e-30))
        point = (a, e)
        if e <= target:
            below = point if below is None or a > below[0] else below
            if e >= target + math.log(CLOSE_ENOUGH):
                break
        else:
            above = point if above is None or a < above[0] else above
        if below is not None and above is not None:
            slope = (above[1] - below[1]) / max(above[0] - below[0], 1e-12)
            a = below[0] + (target - below[1]) / max(slope, 1e-6)
            a = min(max(a, below[0] + 0.25 * (above[0] - below[0])), above[0] - 0.25 * (above[0] - below[0]))
        else:
            slope = 2.0 if last is None else (e - last[1]) / (a - last[0]) if a != last[0] else 2.0
            a += (target - e) / min(max(slope, 1.0), 8.0)
        last = point
    alpha = math.exp(below[0]) if below is not None else math.exp(a) * 0.5  # the check shrinks it further
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
