"""The precision a worker runs its model at, and the host <-> device copies around it.

    --precision auto   bf16 on a GPU that supports it, fp32 on a CPU
                fp32 | bf16 | fp16

The weights stay float32; the model calls run under ``torch.autocast`` at the chosen precision
(convolutions and matrix products in bf16/fp16, reductions and norms where autocast keeps them
in float32), and what leaves the model is cast back to float32. On a CPU, fp32 is the default:
CPUs without bf16 units run bf16 slower than fp32.

Host -> device copies go through pinned (page-locked) memory and do not block, so the copy of
one batch overlaps the work already queued on the GPU; an encode copies integer pixels as they
were read and makes them model arrays there (``pipeline.workers.encoder``); device -> host copies are of
codes, not float latents (``pipeline.codec.quantize_torch``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    import torch


# torch is imported where it is used: the driver imports PRECISIONS and must stay torch-free
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _dtypes() -> dict[str, torch.dtype]:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return _dtypes()[precision]


def name_of(dtype: torch.dtype) -> str:
    return next(k for k, v in _dtypes().items() if v == dtype)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Model calls at ``dtype`` (a no-op at float32)."""
    import torch

    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def to_device(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory, without blocking, to a GPU."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr))
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)
