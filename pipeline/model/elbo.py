"""The training objective: the evidence lower bound, and a tighter bound to check it against.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I))          (Kingma & Welling, 2014)

The expectation is estimated with one reparameterised sample; the KL is analytic. The
importance-weighted bound (Burda et al., 2016) with K samples,

    log p(x) >= IWAE_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)] >= ELBO(x),

is what the tests use to check that the ELBO is a real lower bound on a trained model.
All quantities are in nats per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.model.nets.base import VAE

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ElboTerms:
    recon_nll: torch.Tensor  # (N,) -log p(x|z) at one sampled z
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z))
    kl_per_channel: torch.Tensor  # (channels,) batch mean, summed over positions
    x_hat: torch.Tensor  # mean of p(x|z) at the posterior mean, data space

    @property
    def elbo(self) -> torch.Tensor:
        return -(self.recon_nll + self.kl)

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Mean over the batch of recon + beta * KL (beta = 1 is the negative ELBO)."""
        return (self.recon_nll + beta * self.kl).mean()


def log_likelihood(model: VAE, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per sample, given the decoder's raw output."""
    if model.likelihood == "bernoulli":
        ll = -F.binary_cross_entropy_with_logits(raw, x, reduction="none")
    else:
        scale = model.scale()
        ll = -0.5 * ((x - raw) / scale).pow(2) - torch.log(scale) - 0.5 * LOG_2PI
    return ll.flatten(1).sum(1)


def _size(x: torch.Tensor) -> tuple[int, int] | None:
    return (x.shape[-2], x.shape[-1]) if x.dim() == 4 else None


def elbo_terms(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> ElboTerms:
    post = model.encode(x)
    z = post.sample(generator)
    raw = model.decode_raw(z, _size(x))
    kl_elem = post.kl()
    kl_per_channel = kl_elem.flatten(2).sum(2).mean(0) if kl_elem.dim() > 2 else kl_elem.mean(0)
    with torch.no_grad():
        x_hat = model.decode(post.mean, _size(x)).reshape(x.shape)
    return ElboTerms(
        recon_nll=-log_likelihood(model, raw.reshape(x.shape), x),
        kl=kl_elem.flatten(1).sum(1),
        kl_per_channel=kl_per_channel,
        x_hat=x_hat,
    )


def _log_normal(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + LOG_2PI)).flatten(1).sum(1)


@torch.no_grad()
def iwae_bound(
    model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """IWAE_K estimate of log p(x) per sample (nats)."""
    post = model.encode(x)
    zeros = torch.zeros_like(post.mean)
    log_w = []
    for _ in range(samples):
        z = post.sample(generator)
        raw = model.decode_raw(z, _size(x)).reshape(x.shape)
        log_w.append(
            log_likelihood(model, raw, x)
            + _log_normal(z, zeros, zeros)
            - _log_normal(z, post.mean, post.logvar)
        )
    return torch.logsumexp(torch.stack(log_w), dim=0) - math.log(samples)


def psnr(x: torch.Tensor, x_hat: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-sample PSNR in dB of data in [0, peak]; the reconstruction is clipped to the range."""
    mse = (x_hat.clamp(0.0, peak) - x).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(peak**2 / mse.clamp_min(1e-12))
