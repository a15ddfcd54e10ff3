"""What every VAE here shares: a diagonal Gaussian posterior and the likelihood head.

    x --encoder--> (mean, log-variance) --sample / take mean--> z --decoder--> x_hat

``decode`` returns the mean of p(x|z) in data space; ``decode_raw`` returns the likelihood's
parameters (the Gaussian mean, or Bernoulli logits) for the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.model.nets.config import ConvConfig, DiffusersConfig, ModelConfig, RDConfig

# The Gaussian's scale is learned (one scalar), floored at the standard deviation of 8-bit
# rounding noise, 1 / (255 * sqrt(12)): below that, a density on quantised data can grow without
# bound and the ELBO stops meaning anything.
MIN_LOG_SCALE = math.log(1.0 / (255.0 * math.sqrt(12.0)))


@dataclass(frozen=True)
class Posterior:
    """q(z|x) = N(mean, exp(logvar)), element-wise."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw z = mean + std * eps, so gradients reach mean and logvar."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """Analytic KL(q || N(0, I)) per latent element (nats); sum it for the total."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)


class VAE(nn.Module):
    """Base class: subclasses build ``encoder`` / ``decoder`` and may reshape around them."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Kept even for the Bernoulli likelihood so every checkpoint has the same keys. Starts
        # at sigma = 0.1, about the spread of a poor first reconstruction of data in [0, 1].
        self.log_scale = nn.Parameter(torch.full((), math.log(0.1)))

    @property
    def likelihood(self) -> str:
        return self.config.likelihood

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(min=MIN_LOG_SCALE).exp()

    def encode(self, x: torch.Tensor) -> Posterior:
        raise NotImplementedError

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        raw = self.decode_raw(z, size)
        return torch.sigmoid(raw) if self.likelihood == "bernoulli" else raw

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's latent for one input sample of ``sample_shape``."""
        raise NotImplementedError


class ImageVAE(VAE):
    """A VAE over (N, C, H, W) images of any size: inputs are padded (replicating the edge) to
    a multiple of the downsampling factor, and outputs cropped back to ``size``."""

    config: ConvConfig | DiffusersConfig | RDConfig

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        f = self.config.downsample_factor
        return (-(-height // f) * f, -(-width // f) * f)

    def padded_input(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.config.in_channels
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"expected (N, {channels}, H, W), got {tuple(x.shape)}")
        ph, pw = self.padded_size(x.shape[2], x.shape[3])
        if (ph, pw) != tuple(x.shape[2:]):
            x = nn.functional.pad(x, (0, pw - x.shape[3], 0, ph - x.shape[2]), mode="replicate")
        return x

    @staticmethod
    def cropped(out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        return out if size is None else out[:, :, : size[0], : size[1]]

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``sample_shape`` is (C, H, W)."""
        ph, pw = self.padded_size(sample_shape[-2], sample_shape[-1])
        f = self.config.downsample_factor
        return (self.config.latent_channels, ph // f, pw // f)


def split_moments(h: torch.Tensor, dim: int = 1) -> Posterior:
    mean, logvar = torch.chunk(h, 2, dim=dim)
    # Clamp keeps exp() finite early in training; +-30 nats is far outside useful posteriors.
    return Posterior(mean=mean, logvar=logvar.clamp(-30.0, 20.0))
