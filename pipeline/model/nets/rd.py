"""A learned image codec trained for rate and distortion (Ballé et al., ICLR 2018).

    x -g_a-> y            4 stride-2 5x5 convolutions with GDN between them: y at 1/16
                          (2 or 3 for a downsample_factor of 4 or 8: small images)
    y -h_a-> z            |y| -> 3x3 conv, 2 stride-2 5x5 convolutions: z at 1/64 (hyperprior),
                          of y as the encoder gave it, before rounding (as it was trained)
    z -round-> z_hat      coded under a learned factorized prior (side information)
    z_hat -h_s-> sigma    2 stride-2 transposed convolutions, 3x3 conv: a scale per element of y
    y -round-> y_hat      coded under N(0, sigma) convolved with the unit box
    y_hat -g_s-> x_hat    the mirror of g_a, inverse GDN between

With ``prior="factorized"`` there is no z: y is coded under the factorized prior itself
(Ballé et al., ICLR 2017). Trained on ``lambda * 255^2 * MSE + bits per pixel``
(pipeline.model.rd_loss), with uniform noise standing in for rounding.

The model is a ``VAE`` for the rest of vaezip: ``encode(x).mean`` is y (the posterior of a
unit-width box has no spread to speak of; logvar is that of the box, ln(1/12)) and
``decode(y)`` is g_s; so the verify, inspect and quantizer paths see it like any other image
model. Its own coder (pipeline.codec.learned) codes round(y) with the learned densities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.entropy import FactorizedDensity, gaussian_likelihood, lower_bound, noisy
from pipeline.model.nets.base import ImageVAE, Posterior
from pipeline.model.nets.config import RDConfig

BOX_LOGVAR = math.log(1.0 / 12.0)  # the variance of a unit-width uniform


class GDN(nn.Module):
    """Generalized divisive normalization: ``x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``
    (``inverse``: times it), with beta and gamma kept positive by reparameterization.

    ``param`` "squared" (Ballé's, as CompressAI keeps it): each is stored as the square root
    of itself plus a tiny pedestal and read back squared, so a gamma that starts at zero off
    the diagonal still gets a gradient and learns how channels mask one another. "abs" (the
    first rd models'): each is ``abs`` of its parameter, which has no gradient at 0, so the
    off-diagonal terms stay 0 and the normalization is per channel."""

    PEDESTAL = 2.0**-36  # (2^-18)^2
    BETA_MIN = 1e-6

    def __init__(self, channels: int, inverse: bool = False, param: str = "abs") -> None:
        super().__init__()
        self.inverse = inverse
        self.param = param
        beta, gamma = torch.ones(channels), 0.1 * torch.eye(channels)
        if param == "squared":
            beta, gamma = (beta + self.PEDESTAL).sqrt(), (gamma + self.PEDESTAL).sqrt()
        self.beta = nn.Parameter(beta)
        self.gamma = nn.Parameter(gamma)

    def _positive(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.param == "squared":
            p = self.PEDESTAL
            beta = lower_bound(self.beta, (self.BETA_MIN + p) ** 0.5) ** 2 - p
            return beta, lower_bound(self.gamma, p**0.5) ** 2 - p
        return self.beta.abs() + self.BETA_MIN, self.gamma.abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self._positive()
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta).sqrt()
        return x * norm if self.inverse else x / norm


def _down(cin: int, cout: int, k: int = 5) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=2, padding=k // 2)


def _up(cin: int, cout: int, k: int = 5) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=2, padding=k // 2, output_padding=1)


class RDModel(ImageVAE):
    config: RDConfig

    def __init__(self, config: RDConfig) -> None:
        super().__init__(config)
        n, m, c = config.hidden_channels, config.latent_channels, config.in_channels
        gdn = config.gdn
        stages = config.downsample_factor.bit_length() - 1  # stride-2 convolutions each way
        inner = stages - 2  # the n -> n stages (made in this order: seeded weights as before)
        down = [_down(c, n)] + [layer for _ in range(inner) for layer in (GDN(n, param=gdn), _down(n, n))]
        self.g_a = nn.Sequential(*down, GDN(n, param=gdn), _down(n, m))
        up = [_up(m, n)] + [layer for _ in range(inner) for layer in (GDN(n, True, gdn), _up(n, n))]
        self.g_s = nn.Sequential(*up, GDN(n, True, gdn), _up(n, c))
        if config.prior == "hyperprior":
            self.h_a = nn.Sequential(
                nn.Conv2d(m, n, 3, padding=1), nn.ReLU(), _down(n, n), nn.ReLU(), _down(n, n)
            )
            self.h_s = nn.Sequential(
                _up(n, n), nn.ReLU(), _up(n, n), nn.ReLU(), nn.Conv2d(n, m, 3, padding=1), nn.ReLU()
            )
            self.prior = FactorizedDensity(n, config.density_filters)
        else:
            self.prior = FactorizedDensity(m, config.density_filters)

    @property
    def hyper(self) -> bool:
        return self.config.prior == "hyperprior"

    def encode(self, x: torch.Tensor) -> Posterior:
        y = self.g_a(self.padded_input(x))
        return Posterior(mean=y, logvar=torch.full_like(y, BOX_LOGVAR))

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.cropped(self.g_s(z), size)

    def hyper_latent(self, y: torch.Tensor) -> torch.Tensor:
        """z of ``y`` as the encoder gave it: h_a was trained on it unrounded (its input in
        training has no noise either), and fed the rounded latent it predicted scales that
        cost a short-trained demo model 15 of its 83 bytes of main stream a crop."""
        return self.h_a(y.abs())

    def scales(self, z_hat: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """sigma for each element of a y of ``height`` x ``width`` positions."""
        return self.h_s(z_hat)[:, :, :height, :width]

    def forward_rd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training's pass: (x_hat, bits of y per sample, bits of z per sample), with noise in
        place of rounding."""
        from pipeline.model.entropy import bits

        y = self.encode(x).mean
        y_tilde = noisy(y)
        if self.hyper:
            z_tilde = noisy(self.hyper_latent(y))
            sigma = self.scales(z_tilde, y.shape[2], y.shape[3])
            y_bits = bits(gaussian_likelihood(y_tilde, sigma))
            z_bits = bits(self.prior.likelihood(z_tilde))
        else:
            y_bits = bits(self.prior.likelihood(y_tilde))
            z_bits = torch.zeros_like(y_bits)
        x_hat = self.decode_raw(y_tilde, (x.shape[-2], x.shape[-1]))
        return x_hat, y_bits, z_bits

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        ph, pw = self.padded_size(sample_shape[-2], sample_shape[-1])
        f = self.config.downsample_factor
        return (self.config.latent_channels, ph // f, pw // f)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        # a hyperprior's z is 4x coarser again: pad so both grids are whole
        f = self.config.downsample_factor * (4 if self.hyper else 1)
        return (-(-height // f) * f, -(-width // f) * f)
