"""Load a (sample of a) dataset into memory as model arrays, for training and evaluation.

Training wants random access over a sample, so this is the one place that reads a dataset
whole; the encode path streams instead (``pipeline.data.readers``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.value_range import ValueRange
from pipeline.data.readers import ReadOptions, iter_batches, list_sources
from pipeline.data.samples import INTS, SampleLayout, dtype_range, infer_model_input, to_model
from pipeline.model.nets import ModelConfig


@dataclass(frozen=True)
class RawSample:
    source: str
    row: int
    array: np.ndarray


def read_samples(
    uri: str, options: ReadOptions = ReadOptions(), max_rows: int | None = None
) -> list[RawSample]:
    out: list[RawSample] = []
    for source in list_sources(uri):
        for batch in iter_batches(source, options):
            for row, arr in zip(batch.rows, batch.samples, strict=True):
                out.append(RawSample(source, row, arr))
                if max_rows is not None and len(out) >= max_rows:
                    return out
    if not out:
        raise InputError(uri, "the dataset holds no rows")
    return out


def input_shape_of(samples: list[RawSample]) -> dict[str, int]:
    """input_dim / in_channels of the first sample; every sample must share its shape."""
    first = samples[0]
    for s in samples:
        if s.array.shape != first.array.shape:
            raise InputError(
                s.source,
                f"shape {s.array.shape} differs from {first.array.shape} "
                f"({first.source} row {first.row}); training needs one "
                "shape: crop or resize first",
                row=s.row,
            )
    return infer_model_input(first.array)


def random_crops(
    samples: list[RawSample], size: int, per_image: int | None = None, seed: int = 0
) -> list[RawSample]:
    """``size`` x ``size`` crops at random places of each image ((H, W) or (H, W, C)), so a
    few large images (one photo, one raster) are enough to train on. ``per_image`` defaults to
    enough crops to cover each image about four times over."""
    if size < 1:
        raise InputError(samples[0].source if samples else "?", f"--crop must be positive, got {size}")
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        a = s.array
        if a.ndim not in (2, 3) or min(a.shape[:2]) < size:
            raise InputError(s.source, f"a sample of shape {a.shape} has no {size}x{size} crop", row=s.row)
        h, w = a.shape[:2]
        count = per_image or max(1, round(4 * h * w / size**2))
        ys, xs = rng.integers(0, h - size + 1, count), rng.integers(0, w - size + 1, count)
        for y, x in zip(ys, xs, strict=True):
            out.append(RawSample(s.source, s.row, np.ascontiguousarray(a[y : y + size, x : x + size])))
    return out


WIDE_INTS = ("int32", "int64", "uint32", "uint64")


@dataclass(frozen=True)
class ChosenRange:
    """The value range training records, and why it was chosen (printed by the job)."""

    value_range: ValueRange | None
    why: str


def _outward(lo: float, hi: float) -> tuple[float, float]:
    """``lo..hi`` rounded outward to two significant digits of its span (0..215 -> 0..220)."""
    step = 10.0 ** max(0, math.floor(math.log10(hi - lo)) - 1)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def choose_range(spec: str | None, samples: list[RawSample], margin: float = 0.0) -> ChosenRange:
    """``--value-range``: ``LO,HI`` as given; ``auto`` (the default) from the data:

    - integers: the dtype's range where the data fills most of it (photos 0..255); else the
      data's extent, widened by ``margin`` of its span on each side and rounded outward (a
      16-bit scan holding 0..215 -> 0..220, elevations 236..1076 m -> 230..1080), so the model's
      0..1 is spent on values that occur; wider integers holding pixels (0..255) keep 0..255;
    - floats: 0..1 when the data lies within it, else its extent (an elevation in metres).

    ``samples`` must be the whole training data, not crops of it. Bools need no range."""
    if spec not in (None, "auto"):
        return ChosenRange(ValueRange.of(spec), "given by --value-range")
    if margin < 0:
        raise ConfigError(f"--range-margin must be >= 0, got {margin}")
    dtype = samples[0].array.dtype.name
    if dtype == "bool":
        return ChosenRange(None, "bools need none")
    present = [s.array for s in samples if s.array.size]
    lo = min(float(a.min()) for a in present) if present else 0.0
    hi = max(float(a.max()) for a in present) if present else 0.0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(
            samples[0].source,
            f"cannot take a value range from values {lo:g}..{hi:g}; pass --value-range LO,HI",
        )
    if dtype in INTS:
        full = dtype_range(dtype)
        if dtype in WIDE_INTS:
            full = ValueRange(0.0, 255.0) if 0 <= lo and hi <= 255 else full
            if full.hi == 255.0:
                return ChosenRange(full, f"{dtype} values within 0..255: pixels")
        if hi - lo >= 0.5 * full.span or hi <= lo:
            return ChosenRange(full, f"the data ({lo:g}..{hi:g}) fills most of {dtype}'s {full}")
        pad = margin * (hi - lo)
        a, b = _outward(lo - pad, hi + pad)
        r = ValueRange(max(a, full.lo), min(b, full.hi))
        return ChosenRange(
            r,
            f"the data's extent {lo:g}..{hi:g}"
            + (f" widened by {margin:g} of its span" if margin else "")
            + f", rounded outward ({dtype} holds {full}; a 0..1 model spent on the whole type "
            "would leave the data a sliver of it)",
        )
    if 0.0 <= lo and hi <= 1.0:
        return ChosenRange(ValueRange(0.0, 1.0), f"{dtype} values within 0..1")
    if hi <= lo:
        raise InputError(
            samples[0].source,
            f"cannot take a value range from values {lo:g}..{hi:g}; pass --value-range LO,HI",
        )
    pad = margin * (hi - lo)
    return ChosenRange(
        ValueRange(lo - pad, hi + pad),
        f"the data's extent {lo:g}..{hi:g}" + (f" widened by {margin:g} of its span" if margin else ""),
    )


def stack_for_model(
    samples: list[RawSample], config: ModelConfig, value_range: ValueRange | None = None
) -> tuple[np.ndarray, SampleLayout]:
    arrays, layout = [], None
    for s in samples:
        x, layout = to_model(s.array, config, s.source, s.row, value_range)
        arrays.append(x)
    assert layout is not None
    return np.stack(arrays), layout
