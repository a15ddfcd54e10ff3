"""The classic codecs a user would otherwise reach for, on the same samples, at equal quality.

For 8-bit images: PNG (lossless), and JPEG and WebP at the lowest quality setting whose mean
PSNR reaches a target (vaezip's own), each sample on its own ("per sample") and all samples
tiled into one mosaic image ("tiled", which spreads the headers that dominate small images).

For any other data (16-bit scans, elevations, floats), what a user could reach for at equal
quality, the error measured in the data's units (PSNR against the value range's span):

    zstd of the raw values                       lossless
    float16 + zstd                               as it comes
    uniform quantization + zstd                  the largest step that keeps the target: the
                                                 simplest lossy baseline
    JPEG / WebP of the values scaled to 8 bits   image-shaped samples; the scale is two numbers
                                                 (the value range), not counted
    JPEG 2000 (OpenJPEG, 16-bit)                 integers above 8 bits, single-channel: the
                                                 lowest rate that reaches the target

Every figure is measured here, on the samples given; nothing is estimated.
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
    """The lossless and float16 figures (any array)."""
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


def _restore(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Values back in the sample's dtype, as a decode would write them."""
    if like.dtype.kind in "iu":
        info = np.iinfo(like.dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(like.dtype)
    return y.astype(like.dtype)


def uniform_baseline(samples: list[np.ndarray], target_db: float, lo: float, peak: float) -> Baseline:
    """Uniform quantization with the largest step whose mean PSNR reaches ``target_db``,
    the integer codes zstd-compressed: the simplest lossy store of any array."""
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def trial(step: float) -> tuple[int, float]:
        codes = [np.rint((x.astype(np.float64) - lo) / step) for x in samples]
        width = np.int16 if max(float(np.abs(c).max()) for c in codes) < 2**15 else np.int32
        data = z.compress(b"".join(c.astype(width).tobytes() for c in codes))
        back = [_restore(c * step + lo, x) for c, x in zip(codes, samples, strict=True)]
        return len(data), mean_psnr(samples, back, peak)

    # a step of sqrt(12) x the target RMSE, then smaller ones until the target is reached
    step = peak * 10 ** (-target_db / 20) * math.sqrt(12)
    for _ in range(40):
        size, p = trial(step)
        if p >= target_db:
            return Baseline("uniform quantization + zstd", f"step {step:.4g}", size, p)
        step /= 1.25
    return Baseline("uniform quantization + zstd", f"step {step:.4g}", size, p, False)


def _image_shaped(x: np.ndarray) -> bool:
    return x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3))


def _to_8_bits(x: np.ndarray, lo: float, peak: float) -> np.ndarray:
    return np.clip(np.rint((x.astype(np.float64) - lo) / peak * 255.0), 0, 255).astype(np.uint8)


def scaled_baselines(samples: list[np.ndarray], target_db: float, lo: float, peak: float) -> list[Baseline]:
    """JPEG and WebP of the values scaled to 8 bits over the value range (the scale is two
    numbers), per sample, at the lowest quality whose PSNR in the data's units reaches the
    target; the 8-bit rounding counts in the error."""
    eight = [
        np.clip(np.rint((x.astype(np.float64) - lo) / peak * 255.0), 0, 255).astype(np.uint8) for x in samples
    ]
    out = []
    for fmt in ("JPEG", "WEBP"):

        def per_sample(q: int, fmt: str = fmt) -> tuple[int, float]:
            data = [_encode(e, fmt, q) for e in eight]
            back = [
                _restore(_decode(d, e).astype(np.float64) / 255.0 * peak + lo, x)
                for d, e, x in zip(data, eight, samples, strict=True)
            ]
            return sum(map(len, data)), mean_psnr(samples, back, peak)

        q, size, p, ok = _lowest_quality(per_sample, target_db)
        out.append(Baseline(f"{fmt} of the values in 8 bits", f"quality {q}", size, p, ok))
    return out


def jpeg2000_baseline(samples: list[np.ndarray], target_db: float, lo: float, peak: float) -> Baseline:
    """JPEG 2000 (lossy, 16-bit: Pillow's OpenJPEG) of single-channel integer samples, offset
    to unsigned, per sample, at the highest compression ratio whose PSNR reaches the target."""
    offset = min(0, min(int(x.min()) for x in samples))
    shifted = [(x.astype(np.int64) - offset).astype(np.uint16) for x in samples]

    def trial(ratio: float) -> tuple[int, float]:
        data, back = [], []
        for s, x in zip(shifted, samples, strict=True):
            buf = io.BytesIO()
            Image.fromarray(s).save(
                buf, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True
            )
            data.append(buf.getvalue())
            with Image.open(io.BytesIO(buf.getvalue())) as img:
                back.append(_restore(np.asarray(img).astype(np.float64) + offset, x))
        return sum(map(len, data)), mean_psnr(samples, back, peak)

    # bisection on log(ratio) in 1..4096: PSNR falls as the ratio grows
    lo_r, hi_r = 0.0, 12.0
    best = None
    for _ in range(14):
        mid = (lo_r + hi_r) / 2
        size, p = trial(2.0**mid)
        if p >= target_db:
            best, lo_r = (2.0**mid, size, p), mid
        else:
            hi_r = mid
    if best is None:
        size, p = trial(1.0)
        return Baseline("JPEG 2000 (16-bit)", "ratio 1", size, p, p >= target_db)
    return Baseline("JPEG 2000 (16-bit)", f"ratio {best[0]:.0f}", best[1], best[2])


def baselines(samples: list[np.ndarray], target_db: float, peak: float, lo: float = 0.0) -> list[Baseline]:
    """What the classic codecs spend on ``samples``: at ``target_db`` mean PSNR (against
    ``peak``, the span of the value range that starts at ``lo``) where they are lossy and
    tunable, else as they are."""
    if all(is_image(x) for x in samples):
        return image_baselines(samples, target_db)
    out = array_baselines(samples, peak)
    out.append(uniform_baseline(samples, target_db, lo, peak))
    if all(_image_shaped(x) for x in samples):
        out += scaled_baselines(samples, target_db, lo, peak)
        wide = all(x.ndim == 2 and x.dtype.kind in "iu" and x.dtype.itemsize >= 2 for x in samples)
        if wide and max(int(x.max()) for x in samples) - min(0, min(int(x.min()) for x in samples)) < 2**16:
            out.append(jpeg2000_baseline(samples, target_db, lo, peak))
    return out
