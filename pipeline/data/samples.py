"""Raw samples <-> model arrays, and back exactly.

A model sees float32 in [0, 1]: a sample's values in their own units are mapped from its
``ValueRange`` (LO, HI) to [0, 1], ``(x - LO) / (HI - LO)``, and back on decode. Training
picks the range (``--value-range``: the dtype's range for integer images, e.g. 0..65535 for a
16-bit scan, or the sample's extent for floats in other units, metres of elevation) and
records it in the checkpoint; encode records the range it used in every archive file. Without
one (older checkpoints and archives) the range is 0..255 for integer types (pixels, also when
stored as int64) and 0..1 for floats and bools, as before. The MLP sees a flat vector, the
conv VAE (C, H, W). ``SampleLayout`` remembers the source shape, dtype and range so a
reconstruction is returned in the shape, dtype and units that came in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.value_range import ValueRange
from pipeline.data.grid import stack_rows
from pipeline.model.nets import ConvConfig, DiffusersConfig, MLPConfig, ModelConfig, RDConfig

_FLOATS = ("float16", "float32", "float64")
INTS = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
SUPPORTED_DTYPES = (*INTS, "bool", *_FLOATS)


def default_range(dtype: str) -> ValueRange:
    """The range a sample of ``dtype`` is taken in when nothing records one: 0..255 for
    integers (pixels), 0..1 for floats and bools."""
    return ValueRange(0.0, 255.0) if dtype in INTS else ValueRange(0.0, 1.0)


def dtype_range(dtype: str) -> ValueRange:
    """Every value ``dtype`` can hold (integers; floats and bools: 0..1)."""
    if dtype in INTS:
        info = np.iinfo(np.dtype(dtype))
        return ValueRange(float(info.min), float(info.max))
    return ValueRange(0.0, 1.0)


@dataclass(frozen=True)
class SampleLayout:
    shape: tuple[int, ...]
    dtype: str
    value_range: ValueRange | None = None  # None: default_range(dtype)

    @property
    def range(self) -> ValueRange:
        return self.value_range or default_range(self.dtype)

    def restore(self, x: np.ndarray) -> np.ndarray:
        """Model output for one sample -> the source's shape, dtype and units."""
        return self.restore_batch(x[None])[0]

    def restore_batch(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for N samples of this layout -> (N, *shape) in the source's dtype."""
        r = self.range
        if self.dtype in INTS:
            held = dtype_range(self.dtype)
            x = np.clip(np.rint(x * r.span + r.lo), max(r.lo, held.lo), min(r.hi, held.hi))
        elif self.dtype == "bool":
            x = x > 0.5
        elif r != ValueRange(0.0, 1.0):
            x = x.astype(np.float64) * r.span + r.lo
        if len(self.shape) == 3 and x.ndim == 4:  # (N, C, H, W) -> (N, H, W, C)
            x = np.moveaxis(x, 1, -1)
        return x.reshape(len(x), *self.shape).astype(self.dtype)


def to_model(
    arr: np.ndarray,
    config: ModelConfig,
    uri: str = "?",
    row: int | None = None,
    value_range: ValueRange | None = None,
) -> tuple[np.ndarray, SampleLayout]:
    """One raw sample -> (float32 model array, layout to restore it). Values outside the
    range (the model's, or ``default_range``) are refused: the model was never trained there
    and its output cannot reach them, so they would come back silently wrong."""
    dtype = arr.dtype.name
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(uri, f"dtype {dtype} is not supported (use one of {SUPPORTED_DTYPES})", row=row)
    r = value_range or default_range(dtype)
    if dtype in _FLOATS and not np.isfinite(arr).all():
        raise InputError(uri, "sample holds NaN or infinity", row=row)
    held = dtype_range(dtype) if dtype in INTS else None
    covers = held is not None and r.lo <= held.lo and held.hi <= r.hi  # e.g. uint8 in 0..255
    if dtype != "bool" and arr.size and not covers:
        lo, hi = arr.min(), arr.max()
        if lo < r.lo or hi > r.hi:
            raise InputError(
                uri,
                f"{dtype} values {lo:g}..{hi:g} lie outside the value range {r} "
                f"{'the model was trained on' if value_range else 'assumed for ' + dtype}; "
                "train with --value-range auto (or LO,HI) covering the data's units",
                row=row,
            )
    layout = SampleLayout(shape=tuple(arr.shape), dtype=dtype, value_range=value_range)
    if isinstance(config, MLPConfig):
        if arr.size != config.input_dim:
            raise InputError(
                uri,
                f"sample has {arr.size} values, the model takes {config.input_dim} (shape {arr.shape})",
                row=row,
            )
        return _scaled(arr.reshape(-1), r), layout
    assert isinstance(config, (ConvConfig, DiffusersConfig, RDConfig))
    c = config.in_channels
    if arr.ndim == 2 and c == 1:
        return _scaled(arr[None], r), layout
    if arr.ndim == 3 and arr.shape[-1] == c:  # channels first, moved in the source's dtype
        return _scaled(np.ascontiguousarray(np.moveaxis(arr, -1, 0)), r), layout
    expected = "(H, W) or (H, W, 1)" if c == 1 else f"(H, W, {c})"
    raise InputError(
        uri,
        f"image of shape {arr.shape} does not fit a {c}-channel model (expected {expected})",
        row=row,
    )


@dataclass(frozen=True)
class ModelGroup:
    """Rows of a batch that go through the model together, stacked in ``x`` (N, ...).

    Without ``scale``, ``x`` holds float32 model arrays. With it (``defer=True``), ``x`` holds
    the rows' integer samples as they were read and the model arrays are made where the model
    runs (``pipeline.workers.encoder``): (H, W, C) -> (C, H, W) when ``channels_first``, reshaped to
    ``shape``, float32, then ``(x - LO) / (HI - LO)``; on a GPU that is a quarter of the bytes
    to copy and no pass over them on the host."""

    rows: list[int]  # the rows' places in the batch
    x: np.ndarray
    shape: tuple[int, ...]  # one row's model array
    scale: ValueRange | None = None
    channels_first: bool = False


def model_groups(
    samples: list[np.ndarray],
    config: ModelConfig,
    locate: Callable[[int], tuple[str, int | None]],
    value_range: ValueRange | None = None,
    defer: bool = False,
) -> tuple[list[ModelGroup], list[SampleLayout]]:
    """A batch as model arrays, in groups of one model shape, and each row's layout.

    Samples of one shape and one integer dtype whose values the range covers (uint8 pixels
    in 0..255) pass the same checks, so the first of them is checked and all are converted in
    one array operation (or, with ``defer``, left as they are for the device to convert); the
    rest go one by one. The arrays are the same either way, and so is the error: of several
    bad samples, the earliest (tested)."""
    try:
        return _batch(samples, config, locate, value_range, defer)
    except InputError:
        for i, s in enumerate(samples):  # the earliest bad sample, as one by one would find it
            to_model(s, config, *locate(i), value_range)
        raise


def _batch(
    samples: list[np.ndarray],
    config: ModelConfig,
    locate: Callable[[int], tuple[str, int | None]],
    value_range: ValueRange | None,
    defer: bool,
) -> tuple[list[ModelGroup], list[SampleLayout]]:
    out: list[ModelGroup] = []
    layouts: list[SampleLayout] = [SampleLayout((), "uint8")] * len(samples)
    single: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}  # converted one by one
    groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for i, a in enumerate(samples):
        groups.setdefault((a.shape, a.dtype.name), []).append(i)
    for (_, dtype), idx in groups.items():
        first, layout = to_model(samples[idx[0]], config, *locate(idx[0]), value_range)
        held = dtype_range(dtype) if dtype in INTS else None
        r = value_range or default_range(dtype)
        if len(idx) == 1 or held is None or not (r.lo <= held.lo and held.hi <= r.hi):
            for i in idx:  # values to check, or one sample: one by one
                arr, layouts[i] = to_model(samples[i], config, *locate(i), value_range)
                single.setdefault(arr.shape, []).append((i, arr))
            continue
        for i in idx:
            layouts[i] = layout
        x = stack_rows([samples[i] for i in idx])  # host workers hand them out stacked
        channels_first = x.ndim == 4 and not isinstance(config, MLPConfig)  # (N, H, W, C)
        if defer:
            out.append(ModelGroup(idx, x, first.shape, r, channels_first))
            continue
        if channels_first:  # (N, H, W, C) -> (N, C, H, W)
            x = np.moveaxis(x, -1, 1)
        out.append(
            ModelGroup(idx, _scaled(np.ascontiguousarray(x).reshape(len(idx), *first.shape), r), first.shape)
        )
    for shape, rows in single.items():
        out.append(ModelGroup([i for i, _ in rows], np.stack([a for _, a in rows]), shape))
    return out, layouts


def _scaled(arr: np.ndarray, r: ValueRange) -> np.ndarray:
    """Values in ``r`` -> float32 in 0..1: ``(x - LO) / (HI - LO)`` in float32."""
    x = arr.astype(np.float32)
    if r == ValueRange(0.0, 1.0):
        return x
    if r.lo != 0:
        x -= np.float32(r.lo)
    x /= np.float32(r.span)
    return x


def infer_model_input(arr: np.ndarray) -> dict[str, int]:
    """What a sample says about the model that fits it: input_dim and in_channels."""
    channels = 1 if arr.ndim == 2 else (arr.shape[-1] if arr.ndim == 3 else 0)
    return {"input_dim": int(arr.size), "in_channels": int(channels)}
