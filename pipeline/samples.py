"""Raw samples <-> model arrays, and back exactly.

A model sees float32 in [0, 1] (uint8 data is divided by 255, and so are other integer types
whose values lie in 0..255, as pixel tensors stored as int64 do; float data is taken as is):
the MLP a flat vector, the conv VAE (C, H, W). ``SampleLayout`` remembers the source shape and
dtype so a reconstruction is returned in the shape and dtype that came in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.models import ConvConfig, DiffusersConfig, MLPConfig, ModelConfig

_FLOATS = ("float16", "float32", "float64")
_INTS = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
SUPPORTED_DTYPES = (*_INTS, "bool", *_FLOATS)


@dataclass(frozen=True)
class SampleLayout:
    shape: tuple[int, ...]
    dtype: str

    def restore(self, x: np.ndarray) -> np.ndarray:
        """Model output for one sample -> the source's shape and dtype."""
        return self.restore_batch(x[None])[0]

    def restore_batch(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for N samples of this layout -> (N, *shape) in the source's dtype."""
        if self.dtype in _INTS:
            x = np.clip(np.rint(x * 255.0), 0, 255)
        elif self.dtype == "bool":
            x = x > 0.5
        if len(self.shape) == 3 and x.ndim == 4:  # (N, C, H, W) -> (N, H, W, C)
            x = np.moveaxis(x, 1, -1)
        return x.reshape(len(x), *self.shape).astype(self.dtype)


def to_model(
    arr: np.ndarray, config: ModelConfig, uri: str = "?", row: int | None = None
) -> tuple[np.ndarray, SampleLayout]:
    """One raw sample -> (float32 model array, layout to restore it)."""
    dtype = arr.dtype.name
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(uri, f"dtype {dtype} is not supported (use one of {SUPPORTED_DTYPES})", row=row)
    x = arr.astype(np.float32)
    if dtype in _INTS:
        if dtype != "uint8" and arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(
                uri,
                f"{dtype} values outside 0..255 ({arr.min()}..{arr.max()}); "
                "store pixels as uint8 or scale to float in [0, 1]",
                row=row,
            )
        x /= 255.0
    elif dtype in _FLOATS and not np.isfinite(x).all():
        raise InputError(uri, "sample holds NaN or infinity", row=row)
    layout = SampleLayout(shape=tuple(arr.shape), dtype=dtype)
    if isinstance(config, MLPConfig):
        if x.size != config.input_dim:
            raise InputError(
                uri,
                f"sample has {x.size} values, the model takes {config.input_dim} (shape {arr.shape})",
                row=row,
            )
        return x.reshape(-1), layout
    assert isinstance(config, (ConvConfig, DiffusersConfig))
    c = config.in_channels
    if x.ndim == 2 and c == 1:
        return x[None], layout
    if x.ndim == 3 and x.shape[-1] == c:
        return np.ascontiguousarray(np.moveaxis(x, -1, 0)), layout
    raise InputError(
        uri,
        f"image of shape {arr.shape} does not fit a {c}-channel model "
        "(expected (H, W) for 1 channel or (H, W, C))",
        row=row,
    )


def infer_model_input(arr: np.ndarray) -> dict[str, int]:
    """What a sample says about the model that fits it: input_dim and in_channels."""
    channels = 1 if arr.ndim == 2 else (arr.shape[-1] if arr.ndim == 3 else 0)
    return {"input_dim": int(arr.size), "in_channels": int(channels)}
