"""MLP VAE over flat vectors (the classic 784 -> hidden -> latent shape, any width)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model.nets.base import VAE, Posterior, split_moments
from pipeline.model.nets.config import MLPConfig


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MLPVAE(VAE):
    config: MLPConfig

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        hidden = list(config.hidden_dims)
        self.encoder = _mlp([config.input_dim, *hidden, 2 * config.latent_dim])
        self.decoder = _mlp([config.latent_dim, *reversed(hidden), config.input_dim])

    def encode(self, x: torch.Tensor) -> Posterior:
        return split_moments(self.encoder(x.flatten(1)), dim=1)

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.decoder(z)

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.config.latent_dim,)
