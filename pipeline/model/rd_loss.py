"""The rate-distortion objective: ``lambda * 255^2 * MSE + bits per pixel`` (Ballé et al., 2018;
CompressAI's ``RateDistortionLoss``, so a lambda means the same thing in both).

MSE is over the pixels in 0..1; bits are ``-log2`` of the learned priors' likelihoods of the
noisy latents (y under its prior or conditional, plus the hyper-latent z), per pixel of the
image (its height times width, channels not counted). Larger lambda: more bits, less error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.model.nets.rd import RDModel


@dataclass(frozen=True)
class RDTerms:
    mse: torch.Tensor  # (N,) mean squared error per sample, pixels in 0..1
    y_bits: torch.Tensor  # (N,)
    z_bits: torch.Tensor  # (N,) side information (0 without a hyperprior)
    pixels: int  # per sample: height x width

    @property
    def bpp(self) -> torch.Tensor:
        return (self.y_bits + self.z_bits) / self.pixels

    def loss(self, lmbda: float) -> torch.Tensor:
        return (lmbda * 255.0**2 * self.mse + self.bpp).mean()


def rd_terms(model: RDModel, x: torch.Tensor) -> RDTerms:
    x_hat, y_bits, z_bits = model.forward_rd(x)
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    return RDTerms(mse=mse, y_bits=y_bits, z_bits=z_bits, pixels=x.shape[-2] * x.shape[-1])
