"""The precision a worker runs its model at, and the host <-> device copies around it.

    --precision auto   bf16 on a GPU that supports it, fp32 on a CPU
                fp32 | bf16 | fp16

The weights stay float32; the model calls run under ``torch.autocast`` at the chosen precision
(convolutions and matrix products in bf16/fp16, reductions and norms where autocast keeps them
in float32), and what leaves the model is cast back to float32. On a CPU, fp32 is the default:
CPUs without bf16 units run bf16 slower than fp32.

Host -> device copies go through pinned (page-locked) memory and do not block, so the copy of
one batch overlaps the work already queued on the GPU; an encode copies integer pixels as they
were read and makes them model arrays there (``model_input``); device -> host copies are of
codes, not float latents (``pipeline.quantize_torch``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from pipeline.samples import ModelGroup

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


def model_input(group: ModelGroup, device: torch.device) -> torch.Tensor:
    """A ``ModelGroup``'s model arrays on ``device``: copied there as they are, and, if they are
    samples as read, made model arrays there with ``pipeline.samples``' float32 arithmetic
    (the same values: tested on the CPU)."""
    import torch

    x = to_device(group.x, device)
    r = group.scale
    if r is None:
        return x
    if group.channels_first:  # (N, H, W, C) -> (N, C, H, W)
        x = x.permute(0, 3, 1, 2)
    x = x.reshape(len(group.rows), *group.shape).to(torch.float32, memory_format=torch.contiguous_format)
    if r.lo == 0.0 and r.hi == 1.0:
        return x
    if r.lo != 0:
        x.sub_(torch.tensor(r.lo, dtype=torch.float32, device=x.device))
    # a tensor, not a Python number: a scalar divisor may become a multiplication by its
    # reciprocal, which can differ from numpy's division in the last bit
    return x.div_(torch.tensor(r.span, dtype=torch.float32, device=x.device))
