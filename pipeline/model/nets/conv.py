"""Fully convolutional VAE for 1- or 3-channel images of any height and width.

    (N,C,H,W) -pad to a multiple of f-> [3x3 stride-2 conv, SiLU] x log2(f)
              -> residual blocks at H/f x W/f -> 1x1 conv -> (mean, logvar),
                 each (N, latent_channels, ceil(H/f), ceil(W/f))
    z -> 3x3 conv -> residual blocks -> [3x3 conv to 4x channels, PixelShuffle(2)] x log2(f)
      -> (N,C,H',W') -crop-> (N,C,H,W)

Padding is replicate padding on the bottom and right edges; ``decode(z, size=(H, W))`` crops
the reconstruction back to the exact input size. The heavy work happens at the lowest
resolution, and upsampling is sub-pixel convolution (Shi et al., CVPR 2016): a convolution at
the low resolution followed by a pixel shuffle, several times cheaper than convolving at the
high resolution, and free of transposed convolutions' checkerboard artefacts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.nets.base import ImageVAE, Posterior, split_moments
from pipeline.model.nets.config import ConvConfig


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def stage_widths(config: ConvConfig) -> list[int]:
    """Channel widths after each stride-2 stage: b, 2b, 2b."""
    stages = int(math.log2(config.downsample_factor))
    return [config.base_channels * min(2**i, 2) for i in range(stages)]


class ConvVAE(ImageVAE):
    config: ConvConfig

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        widths = stage_widths(config)
        enc: list[nn.Module] = []
        prev = config.in_channels
        for w in widths:
            enc += [nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.SiLU()]
            prev = w
        enc += [ResBlock(prev), ResBlock(prev), nn.SiLU(), nn.Conv2d(prev, 2 * config.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [
            nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1),
            ResBlock(widths[-1]),
            ResBlock(widths[-1]),
        ]
        outs = [*reversed(widths[:-1]), config.in_channels]
        prev = widths[-1]
        for w in outs:
            dec += [nn.SiLU(), nn.Conv2d(prev, 4 * w, 3, padding=1), nn.PixelShuffle(2)]
            prev = w
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> Posterior:
        return split_moments(self.encoder(self.padded_input(x)), dim=1)

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.cropped(self.decoder(z), size)
