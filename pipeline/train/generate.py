"""The VAE as a generative model: z ~ N(0, T^2 I) from the prior, through the decoder.

Samples come back in a source-like layout: uint8 (H, W) or (H, W, C) images, or for an MLP
VAE a square grey image when its input is a square number of pixels, else a flat vector.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.core.errors import ConfigError
from pipeline.data.samples import SampleLayout
from pipeline.model.checkpoint import Checkpoint


def sample_layout(ckpt: Checkpoint, size: tuple[int, int] | None) -> SampleLayout:
    """The shape samples are drawn in: conv models at ``size``; MLP models from input_dim."""
    config = ckpt.config
    if config.kind == "mlp":
        side = math.isqrt(config.input_dim)
        shape = (side, side) if side * side == config.input_dim else (config.input_dim,)
        return SampleLayout(shape, "uint8")
    if size is None:
        raise ConfigError("a convolutional VAE draws samples of any size: give --size HxW")
    channels = config.in_channels
    return SampleLayout(size if channels == 1 else (*size, channels), "uint8")


@torch.inference_mode()
def generate(
    ckpt: Checkpoint,
    count: int,
    layout: SampleLayout,
    seed: int = 0,
    temperature: float = 1.0,
    batch_rows: int = 256,
    device: torch.device = torch.device("cpu"),
) -> np.ndarray:
    """``count`` samples, (count, *layout.shape) uint8; the same seed gives the same samples."""
    if count < 1 or temperature <= 0:
        raise ConfigError("count must be >= 1 and temperature > 0")
    model = ckpt.model.to(device).eval()
    chw = (layout.shape[-1], *layout.shape[:2]) if len(layout.shape) == 3 else (1, *layout.shape)
    latent = model.latent_shape(chw)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((count, *latent), generator=gen) * temperature  # drawn on the CPU:
    size = None if ckpt.config.kind == "mlp" else (layout.shape[0], layout.shape[1])  # same on any device
    out = []
    for i in range(0, count, batch_rows):
        x = model.decode(z[i : i + batch_rows].to(device), size).float().clamp(0, 1).cpu().numpy()
        out.append(layout.restore_batch(x))
    return np.concatenate(out)
