"""Learned entropy models for rate-distortion training (Ballé et al., ICLR 2017 and 2018).

    factorized prior:  p(y_c) = c_c(y + 1/2) - c_c(y - 1/2), one learned monotone c_c per channel
                       (the non-parametric density of "Variational image compression with a
                       scale hyperprior", appendix 6.1)
    conditional:       p(y | sigma) = Phi((1/2 - |y|) / sigma) - Phi((-1/2 - |y|) / sigma), the
                       Gaussian convolved with the unit box, sigma from the hyperprior

In training ``y`` is the latent plus uniform noise in [-1/2, 1/2) (the box's density is what
makes the noisy latent's likelihood equal the rounded latent's probability); at coding time it
is the rounded latent. Bits are ``-log2`` of these likelihoods, floored at ``LIKELIHOOD_FLOOR``.

For the coder the densities become tables, computed once in float64 on the CPU (``tables``):
the factorized prior as a probability per integer over each channel's support, the
conditional as a ladder of ``SCALES`` standard deviations, log-spaced, that a predicted sigma
is rounded up to. The coder (pipeline.codec.learned) only ever sees these tables and integer
indexes, so encoder and decoder agree on every probability bit for bit.

Written here rather than imported from CompressAI: CompressAI 1.2.8 pins numpy below 2 and
needs torchvision and torch-geometric at import, neither of which installs beside the CPU
build of torch this project runs on; the two modules below are the small part of it a model
needs (the coding is pipeline.codec.learned's).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOOD_FLOOR = 1e-9
SCALE_MIN, SCALE_MAX, SCALES = 0.11, 256.0, 64
TAIL = 1e-9  # probability mass left outside a factorized channel's coded support, each side
MAX_SUPPORT = 1024  # integers a factorized channel's table may span


def scale_ladder() -> np.ndarray:
    """The ``SCALES`` standard deviations a predicted sigma is rounded up to (float64)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALES))


def noisy(y: torch.Tensor) -> torch.Tensor:
    """Training's stand-in for rounding: additive uniform noise of the rounding's width."""
    return y + torch.empty_like(y).uniform_(-0.5, 0.5)


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient still reaches an ``x`` below the bound when it would
    raise it: with ``clamp_min`` a scale under the floor, or a likelihood under its floor, gets
    no gradient and stays there (a hyperprior trained so coded its demo crops in 685 bytes at
    20.8 dB where a factorized prior, with no such floor, took 309 at 22.6)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


def bits(likelihood: torch.Tensor) -> torch.Tensor:
    """-log2 of the likelihoods, summed per sample: (N,)."""
    return -torch.log2(lower_bound(likelihood, LIKELIHOOD_FLOOR)).flatten(1).sum(1)


class FactorizedDensity(nn.Module):
    """One learned cumulative function per channel: ``K`` affine maps with positive slopes
    (softplus) and ``x + a tanh(x)`` between them (``|a| < 1``), a sigmoid at the end, so each
    is monotone from 0 to 1."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (C, 1, L) -> the logit of each channel's cumulative at each value, (C, 1, L)."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """p of each element of ``y`` (N, C, ...) under its channel's density, integrated over
        the unit box around it."""
        shape = y.shape
        flat = y.transpose(0, 1).reshape(self.channels, 1, -1)
        lower = self.logits_cumulative(flat - 0.5)
        upper = self.logits_cumulative(flat + 0.5)
        # subtract on the side of the sigmoid where it is not saturated: exact in both tails
        sign = -torch.sign(lower + upper).detach()
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        moved = p.reshape(self.channels, shape[0], *shape[2:])
        return moved.transpose(0, 1).reshape(shape)

    @torch.no_grad()
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets (C,) int64, probabilities (C, S) float64): channel ``c`` codes the integers
        ``offsets[c] ... offsets[c] + S - 1``, all but ``TAIL`` of its mass each side (zero
        probability past a channel's own support). Computed in float64 on the CPU."""
        lo, hi = self._support()
        span = int(min(MAX_SUPPORT, (hi - lo).max() + 1))
        offsets = lo.astype(np.int64)
        values = torch.from_numpy(offsets[:, None] + np.arange(span)[None, :]).to(torch.float64)
        model = _float64_copy(self)
        x = values.reshape(self.channels, 1, span)
        upper = torch.sigmoid(model.logits_cumulative(x + 0.5))
        lower = torch.sigmoid(model.logits_cumulative(x - 0.5))
        probs = (upper - lower).reshape(self.channels, span).numpy()
        within = np.arange(span)[None, :] <= (hi - lo)[:, None]
        return offsets, np.where(within, np.clip(probs, 0.0, None), 0.0)

    def _support(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the integers between which all but ``TAIL`` of the mass lies."""
        model = _float64_copy(self)
        grid = torch.arange(-4096, 4097, dtype=torch.float64)
        logits = model.logits_cumulative(grid.expand(self.channels, 1, -1))
        cdf = torch.sigmoid(logits).reshape(self.channels, -1).contiguous()
        last = len(grid) - 1
        lo = np.array([int(grid[int(torch.searchsorted(row, TAIL))]) for row in cdf])
        hi = np.array([int(grid[min(last, int(torch.searchsorted(row, 1 - TAIL)))]) for row in cdf])
        return lo.astype(np.int64), hi.astype(np.int64)


def _float64_copy(module: FactorizedDensity) -> FactorizedDensity:
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64)


def gaussian_likelihood(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """p of each element of ``y`` under N(0, sigma) convolved with the unit box.

    Both ends are lower tails, ``Phi(t) = erfc(-t / sqrt 2) / 2``, which keeps its precision
    down to the bits' floor (``LIKELIHOOD_FLOOR``), where ``(1 + erf) / 2`` has no float32
    step between 1 - 6e-8 and 1: a likelihood of 2.5e-8 came out as 3e-8 or 0."""
    sigma = lower_bound(sigma, SCALE_MIN)
    v = y.abs()
    c = -(2.0**-0.5)
    return 0.5 * (torch.erfc(c * (0.5 - v) / sigma) - torch.erfc(c * (-0.5 - v) / sigma))


def scale_indexes(sigma: torch.Tensor) -> torch.Tensor:
    """The ladder step each sigma is rounded up to (int64, same shape)."""
    ladder = torch.from_numpy(scale_ladder()).to(sigma.device, torch.float64)
    return torch.searchsorted(ladder, sigma.to(torch.float64).contiguous()).clamp_max(SCALES - 1)
