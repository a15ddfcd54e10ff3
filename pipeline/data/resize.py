"""Images made the size a latent cache wants, at encode, with what was done recorded per row.

    image (H, W[, C]) -> target (a fixed ``size``, or the aspect-ratio ``bucket`` nearest the
    image's shape) -> resized with Pillow's Lanczos filter (antialiased) so it covers the target
    -> cropped to it ("center"; "random", seeded by the job's seed and the row's key, so a re-run
    gives the same archive; "none": resized to the target exactly, its aspect ratio bent)
    -> and, with ``flip``, also its mirror image, as a second row keyed ``<key>#flip``

Every row gets the columns SDXL-style conditioning uses: ``original_size`` [h, w],
``crop_top_left`` [top, left] (in the resized image), ``target_size`` [h, w], ``flipped``.
An image smaller than its target is upscaled only with ``upscale``; otherwise it is refused,
naming the file and row, never padded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from pipeline.core.errors import ConfigError, InputError
from pipeline.data.readers import Batch

CROPS = ("center", "random", "none")
COLUMNS = ("original_size", "crop_top_left", "target_size", "flipped")
# their Hugging Face ``datasets`` features, carried to decode's outputs with the source's own
# ("Sequence": what datasets before 4.0 write, and every version since reads)
_PAIR = {"_type": "Sequence", "feature": {"dtype": "int64", "_type": "Value"}}
FEATURES = {
    "original_size": _PAIR,
    "crop_top_left": _PAIR,
    "target_size": _PAIR,
    "flipped": {"dtype": "bool", "_type": "Value"},
}
FLIP_SUFFIX = "#flip"


def sdxl_buckets(area: int, step: int = 64, ratio: float = 4.0) -> list[tuple[int, int]]:
    """(height, width) buckets of about ``area`` pixels, each side a multiple of ``step``,
    aspect ratios up to ``ratio``: SDXL's scheme (1024x1024, 896x1152, ... at 1024**2)."""
    out = set()
    h = step
    while h <= math.sqrt(area * ratio):
        w = max(step, int(area / h) // step * step)
        if max(h / w, w / h) <= ratio:
            out.add((h, w))
        h += step
    return sorted(out)


def parse_size(text: str) -> tuple[int, int]:
    """``S`` or ``WxH`` -> (height, width)."""
    try:
        if "x" in text:
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError as err:
        raise ConfigError(f"a size is S or WxH (pixels), got {text!r}") from err
    if w < 1 or h < 1:
        raise ConfigError(f"a size must be positive, got {text!r}")
    return h, w


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None  # (height, width); with buckets: their area
    buckets: tuple[tuple[int, int], ...] = ()  # (height, width) each
    crop: str = "center"
    flip: bool = False
    upscale: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ConfigError(f"--crop must be one of {CROPS}, got {self.crop!r}")
        if self.size is None and not self.buckets:
            raise ConfigError("preprocessing needs --size or --buckets")

    def target(self, h: int, w: int) -> tuple[int, int]:
        """The bucket whose aspect ratio is nearest the image's (log ratio), or the size."""
        if not self.buckets:
            assert self.size is not None
            return self.size
        return min(self.buckets, key=lambda b: (abs(math.log((b[0] / b[1]) / (h / w))), -b[0] * b[1]))


def _resized(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``x`` (H, W[, C]) to (h, w[, C]) with Lanczos: 8-bit images as Pillow's L/RGB, other
    dtypes channel by channel in 32-bit float (rounded back for integers)."""
    if (x.shape[0], x.shape[1]) == (h, w):
        return x
    if x.dtype == np.uint8 and (x.ndim == 2 or x.shape[2] in (1, 3, 4)):
        img = Image.fromarray(x[:, :, 0] if x.ndim == 3 and x.shape[2] == 1 else x)
        out = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
        return out.reshape(h, w, *x.shape[2:])
    chans = x[:, :, None] if x.ndim == 2 else x
    planes = [
        np.asarray(
            Image.fromarray(chans[:, :, c].astype(np.float32), "F").resize((w, h), Image.Resampling.LANCZOS)
        )
        for c in range(chans.shape[2])
    ]
    out = np.stack(planes, axis=2)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(x.dtype).reshape(h, w, *x.shape[2:])


def prepare(
    x: np.ndarray, key: str, config: Preprocess, where: str, row: int | None
) -> list[tuple[np.ndarray, str, dict[str, Any]]]:
    """One image -> its rows: (sample, key, the recorded columns)."""
    if x.ndim not in (2, 3):
        raise InputError(where, f"--size and --buckets take images, this sample has shape {x.shape}", row=row)
    h0, w0 = x.shape[:2]
    th, tw = config.target(h0, w0)
    if config.crop == "none":
        scale_h, scale_w = th / h0, tw / w0
        if max(scale_h, scale_w) > 1 and not config.upscale:
            raise InputError(
                where, f"image {w0}x{h0} is smaller than its target {tw}x{th}; pass --upscale", row=row
            )
        out, top, left = _resized(x, th, tw), 0, 0
    else:
        scale = max(th / h0, tw / w0)  # cover the target, then crop
        if scale > 1 and not config.upscale:
            raise InputError(
                where, f"image {w0}x{h0} is smaller than its target {tw}x{th}; pass --upscale", row=row
            )
        rh, rw = max(th, round(h0 * scale)), max(tw, round(w0 * scale))
        big = _resized(x, rh, rw)
        if config.crop == "center":
            top, left = (rh - th) // 2, (rw - tw) // 2
        else:
            digest = hashlib.sha256(f"{config.seed}:{key}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            top, left = int(rng.integers(rh - th + 1)), int(rng.integers(rw - tw + 1))
        out = np.ascontiguousarray(big[top : top + th, left : left + tw])
    cols = {"original_size": [h0, w0], "crop_top_left": [top, left], "target_size": [th, tw]}
    rows = [(out, key, {**cols, "flipped": False})]
    if config.flip:
        rows.append((np.ascontiguousarray(out[:, ::-1]), key + FLIP_SUFFIX, {**cols, "flipped": True}))
    return rows


def preprocessed(batch: Batch, config: Preprocess, keys: list[str], where: str) -> Batch:
    """``batch`` with every image made its target size (and mirrored, with ``flip``); ``keys``
    are the images' own keys."""
    samples, ids, rows = [], [], []
    columns: dict[str, list[Any]] = {name: [] for name in (*batch.columns, *COLUMNS)}
    for i, (key, x, row) in enumerate(zip(keys, batch.samples, batch.rows, strict=True)):
        for sample, k, cols in prepare(x, key, config, where, row):
            samples.append(sample)
            ids.append(k)
            rows.append(row)
            for name, values in batch.columns.items():
                if name not in COLUMNS:
                    columns[name].append(values[i])
            for name in COLUMNS:
                columns[name].append(cols[name])
    features = {**(batch.features or {}), **FEATURES}
    return replace(batch, samples=samples, columns=columns, ids=ids, source_rows=rows, features=features)
