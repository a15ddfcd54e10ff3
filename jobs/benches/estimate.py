"""A GPU throughput estimate from the models' FLOPs, for when no GPU is at hand.

Clearly an estimate: FLOPs per sample counted by torch's FlopCounterMode, divided into a
GPU's dense bf16 peak at an assumed utilization. Small convolutions run far below peak, so the
utilization assumed is low; the CPU rows/s measured on this machine give the same models'
achieved FLOP/s for comparison.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.data.samples import to_model
from pipeline.model.checkpoint import Checkpoint

H100_BF16_DENSE_TFLOPS = 989.0
ASSUMED_UTILIZATION = 0.10


def flops_per_sample(ckpt: Checkpoint, arrays: np.ndarray, batch: int = 64) -> dict:
    x = torch.from_numpy(np.stack([to_model(a, ckpt.config)[0] for a in arrays[:batch]]))
    size = None if ckpt.config.kind == "mlp" else tuple(arrays.shape[1:3])
    with torch.inference_mode():
        with FlopCounterMode(display=False) as enc:
            z = ckpt.model.encode(x).mean
        with FlopCounterMode(display=False) as dec:
            ckpt.model.decode(z, size)
    return {"encode_flops": enc.get_total_flops() / len(x), "decode_flops": dec.get_total_flops() / len(x)}


def estimate(
    ckpt: Checkpoint, arrays: np.ndarray, cpu_encode_rows_s: float | None, cpu_decode_rows_s: float | None
) -> dict:
    f = flops_per_sample(ckpt, arrays)
    gpu = H100_BF16_DENSE_TFLOPS * 1e12 * ASSUMED_UTILIZATION
    out = {
        **f,
        "gpu": "H100 (bf16 dense peak 989 TFLOP/s)",
        "assumed_utilization": ASSUMED_UTILIZATION,
        "gpu_encode_rows_s": gpu / f["encode_flops"],
        "gpu_decode_rows_s": gpu / f["decode_flops"],
    }
    if cpu_encode_rows_s:
        out["cpu_encode_gflop_s"] = cpu_encode_rows_s * f["encode_flops"] / 1e9
    if cpu_decode_rows_s:
        out["cpu_decode_gflop_s"] = cpu_decode_rows_s * f["decode_flops"] / 1e9
    return out
