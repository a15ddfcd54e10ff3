"""Job-wide latent quantizer: calibrated once on a sample, then fixed and stored with the data.

Latents are handled as (N, C, P): C channels (latent units for the MLP, latent channels for
the conv VAE) at P positions. Two modes:

- ``affine``: per channel, the calibrated [lo, hi] range split into 2**bits - 1 equal steps.
- ``posterior``: the VAE says how precisely each channel is known. The step of channel c is
  ``step_sigmas`` times its mean posterior sigma, so a code is never finer than the encoder's
  own uncertainty; channels whose KL is below ``dead_kl_nats`` carry no information about x
  and are dropped (they dequantize to 0, the prior mean).
- ``loss``: the steps that keep the decoded output's PSNR within ``max_loss_db`` of the
  unquantized latents' with the fewest bits (``pipeline.codec.ratecontrol``; needs the decoder, so
  the encode worker calibrates it).
- ``latent``: the steps that keep each channel's RMS error within ``max_latent_error`` of that
  channel's standard deviation (what a latent cache for diffusion training asks: the model
  trains on the latents themselves). A uniform step s errs by s / sqrt(12) in RMS, so s starts
  at sqrt(12) * E * std and the encode worker tightens it where the measured error is above E.
  No decoder: calibration costs one encode of its rows. Every channel is kept.

    x -> code = clip(round((x - lo) / step), 0, levels - 1)      (clipped values are counted)
    code -> lo + code * step

``quantize`` refuses unknown modes, as CompressAI's ``quantize()`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pipeline.core.errors import ConfigError

MODES = ("affine", "posterior", "loss", "latent", "rounded")
LATENT_LEVELS = 1 << 16  # latent: a step fine enough for E may need up to 16-bit codes
# Range margin beyond the calibration sample's extremes, as a share of its span: unseen data
# reaches a little further than the sample did.
RANGE_MARGIN = 0.05


# The default: the loss quantizer at 0.1 dB. Measured on 2026-11-29 (BENCHMARKS.md, "Against
# latent caches"): on the demo photo model the posterior step (1 sigma) cost 0.15 dB for 428
# bytes a crop where 0.1 dB cost 0.03 dB for 420; on the digits both gave 13.8-13.9 bytes at
# about 0.1 dB; on the SD-like model the posterior step fell back to 8 bits (2,858 bytes, 0.35x
# float16) where 0.1 dB took 819 (0.10x). Only the loss mode says what quality a user gets.
DEFAULT_MAX_LOSS_DB = 0.1


@dataclass(frozen=True)
class QuantizerConfig:
    mode: str = "loss"
    bits: int = 8  # affine: exact; posterior: the most a channel may use
    step_sigmas: float = 1.0  # posterior: step = step_sigmas * mean posterior sigma
    dead_kl_nats: float = 0.01  # posterior, loss: channels below this KL per element are dropped
    max_loss_db: float = DEFAULT_MAX_LOSS_DB  # loss: the most PSNR quantizing may cost, in dB
    max_latent_error: float = 0.01  # latent: RMS error / channel std, at most

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"quantizer mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.max_loss_db <= 20:
            raise ConfigError(f"--max-loss-db must be in (0, 20] dB, got {self.max_loss_db}")
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"bits must be in 1..16, got {self.bits}")
        if not 0 < self.max_latent_error <= 1:
            raise ConfigError(f"--max-latent-error must be in (0, 1], got {self.max_latent_error}")
        if self.step_sigmas <= 0 or self.dead_kl_nats < 0:
            raise ConfigError("step_sigmas must be > 0 and dead_kl_nats >= 0")


@dataclass(frozen=True)
class QuantizerParams:
    mode: str
    lo: tuple[float, ...]  # per channel
    step: tuple[float, ...]  # per channel
    levels: tuple[int, ...]  # per channel
    active: tuple[bool, ...]  # per channel; inactive channels are not stored
    # loss mode: the bound asked for, the loss measured on calibration rows it did not fit on,
    # and the codes' order-0 entropy there (bits per stored latent value)
    target_loss_db: float | None = None
    measured_loss_db: float | None = None
    bits_per_value: float | None = None
    measured_loss_se_db: float | None = None  # its standard error over the check rows
    # every mode: the archived latents' RMS error over each channel's standard deviation, the
    # worst channel's, measured on calibration rows (latent mode: ones it was not fitted on)
    target_latent_error: float | None = None
    measured_latent_error: float | None = None

    @property
    def channels(self) -> int:
        return len(self.lo)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if max(self.levels, default=1) <= 256 else np.uint16)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "lo": list(self.lo),
            "step": list(self.step),
            "levels": list(self.levels),
            "active": list(self.active),
            **{
                k: v
                for k, v in (
                    ("target_loss_db", self.target_loss_db),
                    ("measured_loss_db", self.measured_loss_db),
                    ("bits_per_value", self.bits_per_value),
                    ("measured_loss_se_db", self.measured_loss_se_db),
                    ("target_latent_error", self.target_latent_error),
                    ("measured_latent_error", self.measured_latent_error),
                )
                if v is not None
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> QuantizerParams:
        """From untrusted metadata: every field is checked."""
        try:
            p = cls(
                mode=str(data["mode"]),
                lo=tuple(float(v) for v in data["lo"]),
                step=tuple(float(v) for v in data["step"]),
                levels=tuple(int(v) for v in data["levels"]),
                active=tuple(bool(v) for v in data["active"]),
                **{
                    k: float(data[k])
                    for k in (
                        "target_loss_db",
                        "measured_loss_db",
                        "bits_per_value",
                        "measured_loss_se_db",
                        "target_latent_error",
                        "measured_latent_error",
                    )
                    if data.get(k) is not None
                },
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"bad quantizer parameters: {err}") from err
        n = len(p.lo)
        if p.mode not in MODES or not (len(p.step) == len(p.levels) == len(p.active) == n):
            raise ConfigError("bad quantizer parameters: mode or per-channel lengths disagree")
        if any(not math.isfinite(v) for v in p.lo + p.step) or any(s <= 0 for s in p.step):
            raise ConfigError("bad quantizer parameters: steps must be finite and positive")
        if any(not 1 <= v <= 65536 for v in p.levels):
            raise ConfigError("bad quantizer parameters: levels must be in 1..65536")
        return p


@dataclass(frozen=True)
class CalibrationStats:
    """Per-channel statistics of a sample, gathered by the encode workers."""

    minimum: np.ndarray  # (C,) of posterior means
    maximum: np.ndarray  # (C,)
    mean_sigma: np.ndarray  # (C,) mean posterior standard deviation
    kl_per_element: np.ndarray  # (C,) mean KL per latent element, nats
    std: np.ndarray | None = None  # (C,) standard deviation of the posterior means


def stats_from_latents(mean: np.ndarray, logvar: np.ndarray) -> CalibrationStats:
    """``mean``/``logvar`` of shape (N, C, P)."""
    kl = 0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar)
    return CalibrationStats(
        minimum=mean.min(axis=(0, 2)),
        maximum=mean.max(axis=(0, 2)),
        mean_sigma=np.exp(0.5 * logvar).mean(axis=(0, 2)),
        kl_per_element=kl.mean(axis=(0, 2)),
        std=mean.std(axis=(0, 2)),
    )


def calibrate(stats: CalibrationStats, config: QuantizerConfig) -> QuantizerParams:
    span = stats.maximum - stats.minimum
    lo = stats.minimum - RANGE_MARGIN * span
    hi = stats.maximum + RANGE_MARGIN * span
    width = np.maximum(hi - lo, 1e-6)
    max_levels = 2**config.bits
    if config.mode == "affine":
        levels = np.full(len(lo), max_levels)
        step = width / (max_levels - 1)
        active = np.ones(len(lo), dtype=bool)
    elif config.mode == "latent":
        assert stats.std is not None
        step = np.maximum(math.sqrt(12) * config.max_latent_error * stats.std, width / (LATENT_LEVELS - 1))
        levels = np.minimum(np.floor(width / step).astype(np.int64) + 1, LATENT_LEVELS)
        active = np.ones(len(lo), dtype=bool)
    else:
        step = config.step_sigmas * np.maximum(stats.mean_sigma, 1e-6)
        levels = np.floor(width / step).astype(np.int64) + 1
        # A channel that would need more than 2**bits levels gets a coarser step instead.
        too_many = levels > max_levels
        step = np.where(too_many, width / (max_levels - 1), step)
        levels = np.minimum(levels, max_levels)
        active = stats.kl_per_element >= config.dead_kl_nats
    return QuantizerParams(
        mode=config.mode,
        lo=tuple(float(v) for v in lo),
        step=tuple(float(v) for v in step),
        levels=tuple(int(v) for v in levels),
        active=tuple(bool(v) for v in active),
    )


def latent_errors(x: np.ndarray, params: QuantizerParams, std: np.ndarray) -> np.ndarray:
    """(N, C, P) latents -> each channel's RMS error after quantizing, over ``std`` (C,)."""
    back = dequantize(quantize(x, params)[0], params)
    rms = np.sqrt(np.mean((back.astype(np.float64) - x) ** 2, axis=(0, 2)))
    return rms / np.maximum(std, 1e-12)


def fit_latent_steps(
    fit: np.ndarray,
    check: np.ndarray,
    params: QuantizerParams,
    std: np.ndarray,
    bound: float,
    rounds: int = 4,
) -> QuantizerParams:
    """Latent mode: each channel's step tightened until its RMS error on ``fit`` is within
    ``bound`` of its std; then the error measured on ``check``, rows it was not fitted on."""
    width = (np.asarray(params.levels) - 1) * np.asarray(params.step)
    step = np.asarray(params.step, dtype=np.float64)
    for _ in range(rounds):
        err = latent_errors(fit, params, std)
        over = err > bound
        if not over.any():
            break
        step = np.where(over, step * 0.98 * bound / err, step)
        step = np.maximum(step, width / (LATENT_LEVELS - 1))
        levels = np.minimum(np.floor(width / step).astype(np.int64) + 1, LATENT_LEVELS)
        params = replace(params, step=tuple(float(v) for v in step), levels=tuple(int(v) for v in levels))
    measured = latent_errors(check, params, std)
    return replace(params, target_latent_error=bound, measured_latent_error=float(measured.max()))


def quantize(x: np.ndarray, params: QuantizerParams) -> tuple[np.ndarray, int]:
    """(N, C, P) float latents -> ((N, C_active, P) integer codes, number of clipped values)."""
    if params.mode not in MODES:
        raise ConfigError(f"unknown quantizer mode {params.mode!r}")
    if x.ndim != 3 or x.shape[1] != params.channels:
        raise ValueError(f"expected (N, {params.channels}, P) latents, got {x.shape}")
    active = np.asarray(params.active)
    lo = np.asarray(params.lo, dtype=np.float64)[active][None, :, None]
    step = np.asarray(params.step, dtype=np.float64)[active][None, :, None]
    top = np.asarray(params.levels)[active][None, :, None] - 1
    q = np.rint((x[:, active].astype(np.float64) - lo) / step)
    clipped = int(np.count_nonzero((q < 0) | (q > top)))
    return np.clip(q, 0, top).astype(params.dtype), clipped


def dequantize(codes: np.ndarray, params: QuantizerParams) -> np.ndarray:
    """(N, C_active, P) codes -> (N, C, P) float32 latents; dropped channels are 0."""
    active = np.asarray(params.active)
    lo = np.asarray(params.lo, dtype=np.float64)[active][None, :, None]
    step = np.asarray(params.step, dtype=np.float64)[active][None, :, None]
    values = codes.astype(np.float64)
    values *= step
    values += lo  # lo + code * step in float64, then float32: the value FORMAT.md defines
    if active.all():
        return values.astype(np.float32)
    n, _, p = codes.shape
    out = np.zeros((n, params.channels, p), dtype=np.float32)
    out[:, active] = values
    return out


def rounded(channels: int) -> QuantizerParams:
    """An rd model's quantizer (mode "rounded"): its latents rounded to integers, as it was
    trained to expect, stored as uint16 codes of the integer plus 32768; nothing to fit."""
    return QuantizerParams(
        mode="rounded",
        lo=(-32768.0,) * channels,
        step=(1.0,) * channels,
        levels=(65536,) * channels,
        active=(True,) * channels,
    )
