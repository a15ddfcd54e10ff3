"""The classic codecs a user would otherwise reach for, on the same samples, at equal quality.

For 8-bit images: PNG (lossless), and JPEG and WebP at the lowest quality setting whose mean
PSNR reaches a target (vaezip's own), each sample on its own ("per sample") and all samples
tiled into one mosaic image ("tiled", which spreads the headers that dominate small images).
For other arrays: zstd of the raw values (lossless) and of the values as float16. Every figure
is measured here, on the samples given; nothing is estimated.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zstandard
from PIL import Image

from pipeline.data.grid import tile, untile

ZSTD_LEVEL = 19


@dataclass(frozen=True)
class Baseline:
    codec: str
    setting: str  # the quality chosen, or "lossless"
    bytes: int  # over all the samples
    psnr_db: float  # mean per-sample PSNR (inf: lossless)
    reached: bool = True  # False: even the best setting stays below the target PSNR


def psnr(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    """As jobs.verify computes it: an exact sample counts as 1e-30 squared error."""
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)) if x.size else 0.0
    return 10 * math.log10(peak**2 / max(mse, 1e-30))


def mean_psnr(xs: list[np.ndarray], ys: list[np.ndarray], peak: float) -> float:
    return float(np.mean([psnr(x, y, peak) for x, y in zip(xs, ys, strict=True)]))


def is_image(x: np.ndarray) -> bool:
    return x.dtype == np.uint8 and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3)))


def _encode(x: np.ndarray, fmt: str, quality: int | None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x)
    if quality is None:
        img.save(buf, format=fmt, optimize=True)
    else:
        img.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def _decode(data: bytes, like: np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:  # WebP has no grey: it comes back as RGB
        mode = "RGB" if like.ndim == 3 and like.shape[-1] == 3 else "L"
        return np.asarray(img.convert(mode)).reshape(like.shape)


Trial = Callable[[int], tuple[int, float]]  # quality -> (bytes, mean PSNR)


def _lowest_quality(trial: Trial, target: float) -> tuple[int, int, float, bool]:
    """Binary search for the lowest quality in 0..100 whose PSNR reaches ``target`` (PSNR grows
    with quality, nearly always); returns (quality, bytes, psnr, reached)."""
    lo, hi = 0, 100
    best: tuple[int, int, float] | None = None
    while lo <= hi:
        q = (lo + hi) // 2
        size, p = trial(q)
        if p >= target:
            best, hi = (q, size, p), q - 1
        else:
            lo = q + 1
    if best is None:
        size, p = trial(100)
        return 100, size, p, False
    return (*best, True)


def _tiled_trial(samples: list[np.ndarray], fmt: str) -> Trial:
    grid = tile(np.stack(samples))

    def trial(q: int) -> tuple[int, float]:
        data = _encode(grid, fmt, q)
        back = untile(_decode(data, grid), len(samples), samples[0].shape)
        return len(data), mean_psnr(samples, list(back), 255.0)

    return trial


def image_baselines(samples: list[np.ndarray], target_db: float) -> list[Baseline]:
    out = []
    png = [_encode(x, "PNG", None) for x in samples]
    out.append(Baseline("PNG", "lossless", sum(map(len, png)), math.inf))
    for fmt in ("JPEG", "WEBP"):

        def per_sample(q: int, fmt: str = fmt) -> tuple[int, float]:
            data = [_encode(x, fmt, q) for x in samples]
            back = [_decode(d, x) for d, x in zip(data, samples, strict=True)]
            return sum(map(len, data)), mean_psnr(samples, back, 255.0)

        q, size, p, ok = _lowest_quality(per_sample, target_db)
        out.append(Baseline(f"{fmt} per sample", f"quality {q}", size, p, ok))
        if len({x.shape for x in samples}) == 1:
            q, size, p, ok = _lowest_quality(_tiled_trial(samples, fmt), target_db)
            out.append(Baseline(f"{fmt} tiled", f"quality {q}", size, p, ok))
    return out


def array_baselines(samples: list[np.ndarray], peak: float) -> list[Baseline]:
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    raw = b"".join(np.ascontiguousarray(x).tobytes() for x in samples)
    half = [x.astype(np.float16) for x in samples]
    return [
        Baseline(f"zstd -{ZSTD_LEVEL} of the raw values", "lossless", len(z.compress(raw)), math.inf),
        Baseline(
            f"float16 + zstd -{ZSTD_LEVEL}",
            "float16",
            len(z.compress(b"".join(h.tobytes() for h in half))),
            mean_psnr(samples, half, peak),
        ),
    ]


def baselines(samples: list[np.ndarray], target_db: float, peak: float) -> list[Baseline]:
    """What the classic codecs spend on ``samples``: at ``target_db`` mean PSNR where they are
    lossy and tunable, else as they are."""
    if all(is_image(x) for x in samples):
        return image_baselines(samples, target_db)
    return array_baselines(samples, peak)
