"""Load a (sample of a) dataset into memory as model arrays, for training and evaluation.

Training wants random access over a sample, so this is the one place that reads a dataset
whole; the encode path streams instead (``pipeline.data.readers``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import InputError
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


def choose_range(spec: str | None, samples: list[RawSample]) -> ValueRange | None:
    """``--value-range``: ``LO,HI`` as given; ``auto`` (the default) from the data: the
    dtype's range for 8- and 16-bit integers (a 16-bit scan is 0..65535), 0..255 for wider
    integers holding pixels, 0..1 for floats within it, else the sample's extent (an
    elevation in metres). Bools need none."""
    if spec not in (None, "auto"):
        return ValueRange.of(spec)
    dtype = samples[0].array.dtype.name
    if dtype == "bool":
        return None
    if dtype in INTS and dtype not in WIDE_INTS:
        return dtype_range(dtype)
    lo = min(float(s.array.min()) for s in samples if s.array.size)
    hi = max(float(s.array.max()) for s in samples if s.array.size)
    usual = ValueRange(0.0, 255.0) if dtype in WIDE_INTS else ValueRange(0.0, 1.0)
    if usual.lo <= lo and hi <= usual.hi:
        return usual
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        raise InputError(
            samples[0].source,
            f"cannot take a value range from values {lo:g}..{hi:g}; pass --value-range LO,HI",
        )
    return ValueRange(lo, hi)


def stack_for_model(
    samples: list[RawSample], config: ModelConfig, value_range: ValueRange | None = None
) -> tuple[np.ndarray, SampleLayout]:
    arrays, layout = [], None
    for s in samples:
        x, layout = to_model(s.array, config, s.source, s.row, value_range)
        arrays.append(x)
    assert layout is not None
    return np.stack(arrays), layout
