"""Load a (sample of a) dataset into memory as model arrays, for training and evaluation.

Training wants random access over a sample, so this is the one place that reads a dataset
whole; the encode path streams instead (``pipeline.readers``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.models import ModelConfig
from pipeline.readers import ReadOptions, iter_batches, list_sources
from pipeline.samples import SampleLayout, infer_model_input, to_model


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


def stack_for_model(samples: list[RawSample], config: ModelConfig) -> tuple[np.ndarray, SampleLayout]:
    arrays, layout = [], None
    for s in samples:
        x, layout = to_model(s.array, config, s.source, s.row)
        arrays.append(x)
    assert layout is not None
    return np.stack(arrays), layout
