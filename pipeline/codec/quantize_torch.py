"""``pipeline.codec.quantize`` on the worker's device: the same arithmetic, in float64, so the codes
are the very ones the numpy path gives (tested), and only integer codes cross to the host.

    quantize_tensor(means on the device, params) -> (codes on the host, clipped count)
    dequantize_tensor(codes on the device, params) -> latents on the device
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.codec.quantize import QuantizerParams


def quantize_tensor(x: torch.Tensor, params: QuantizerParams) -> tuple[np.ndarray, int]:
    """(N, C, P) latents on any device -> ((N, C_active, P) codes as numpy, values clipped)."""
    if x.ndim != 3 or x.shape[1] != params.channels:
        raise ValueError(f"expected (N, {params.channels}, P) latents, got {tuple(x.shape)}")
    active = torch.tensor(params.active, device=x.device)
    lo = torch.tensor(params.lo, dtype=torch.float64, device=x.device)[active][None, :, None]
    step = torch.tensor(params.step, dtype=torch.float64, device=x.device)[active][None, :, None]
    top = torch.tensor(params.levels, dtype=torch.float64, device=x.device)[active][None, :, None] - 1
    x = x if all(params.active) else x[:, active]
    # as few passes as the arithmetic allows (the CPU runs it too): a new float64 tensor,
    # then in place; round is half to even, as np.rint
    q = x.to(torch.float64).sub_(lo).div_(step).round_()
    codes = torch.clamp(q, min=torch.zeros_like(top), max=top)
    clipped = int(torch.count_nonzero(codes != q).item())
    small = codes.to(torch.uint8 if params.dtype == np.uint8 else torch.int32)
    return small.cpu().numpy().astype(params.dtype, copy=False), clipped


def dequantize_tensor(codes: torch.Tensor, params: QuantizerParams) -> torch.Tensor:
    """(N, C_active, ...) codes on any device -> (N, C, ...) float32 latents there; dropped
    channels are 0 (``pipeline.codec.quantize.dequantize``, the same float64 arithmetic)."""
    active = torch.tensor(params.active, device=codes.device)
    shape = (1, -1) + (1,) * (codes.ndim - 2)
    lo = torch.tensor(params.lo, dtype=torch.float64, device=codes.device)[active].reshape(shape)
    step = torch.tensor(params.step, dtype=torch.float64, device=codes.device)[active].reshape(shape)
    out = torch.zeros(
        (codes.shape[0], params.channels, *codes.shape[2:]), dtype=torch.float32, device=codes.device
    )
    out[:, active] = (lo + codes.to(torch.float64) * step).to(torch.float32)
    return out
