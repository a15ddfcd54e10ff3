"""How far a fully convolutional model looks: the context a tile needs to come out as it would
inside the whole image (``pipeline.data.tiles``).

    encoder_reach(model, limit)  pixels beyond a latent cell's own f x f patch that can change it
    decoder_reach(model, limit)  latent cells beyond a cell that can change the pixels it decodes
    tile_reach(model, tile)      the decoder's reach for tiles of that size (at most one tile)

Measured, not derived from the layers: one backward pass from the centre of a probe input, and
the extent of the gradient that reaches the input. A model whose reach is at least ``limit`` (an
attention block or a GroupNorm sees the whole input) gets ``limit``: its tiles are then close to,
not equal to, the whole image's. Two random probes are united, so a unit that happens to be off
for one input (a ReLU below zero) does not shorten the reach.
"""

from __future__ import annotations

import torch

from pipeline.model.nets.base import VAE, ImageVAE


def _extent(grad: torch.Tensor) -> tuple[int, int, int, int]:
    """The first and last row and column (of N, C, H, W) where ``grad`` is non-zero."""
    hit = grad.abs().sum(dim=(0, 1)) > 0
    rows = torch.nonzero(hit.any(dim=1)).flatten()
    cols = torch.nonzero(hit.any(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _device(model: ImageVAE) -> torch.device:
    return next(model.parameters()).device


def _up(n: int, f: int) -> int:
    return -(-n // f) * f


@torch.inference_mode(False)
@torch.enable_grad()
def encoder_reach(model: ImageVAE, limit: int) -> int:
    """Pixels of context (a multiple of the downsampling factor, at most ``limit`` rounded up to
    it) that make each latent cell of a tile what it is inside the whole image."""
    f = model.config.downsample_factor
    cells = _up(limit, f) // f
    size = (2 * cells + 1) * f  # the centre cell's patch starts at cells * f
    reach = 0
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(1, model.config.in_channels, size, size, generator=g)
        x = x.to(_device(model)).requires_grad_()
        (grad,) = torch.autograd.grad(model.encode(x).mean[0, :, cells, cells].sum(), x)
        r0, r1, c0, c1 = _extent(grad)
        reach = max(reach, cells * f - r0, r1 - (cells * f + f - 1), cells * f - c0, c1 - (cells * f + f - 1))
    return min(_up(reach, f), cells * f)


@torch.inference_mode(False)
@torch.enable_grad()
def decoder_reach(model: ImageVAE, limit: int) -> int:
    """Latent cells of context (at most ``limit``) that make the pixels each cell of a tile
    decodes what they are when the whole image's latents are decoded at once."""
    n = 2 * limit + 1
    f = model.config.downsample_factor
    reach = 0
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(1, model.config.latent_channels, n, n, generator=g)
        z = z.to(_device(model)).requires_grad_()
        out = model.decode(z)
        patch = out[0, :, limit * f : (limit + 1) * f, limit * f : (limit + 1) * f]
        (grad,) = torch.autograd.grad(patch.sum(), z)
        r0, r1, c0, c1 = _extent(grad)
        reach = max(reach, limit - r0, r1 - limit, limit - c0, c1 - limit)
    return min(reach, limit)


def tile_reach(model: VAE, tile: int) -> int | None:
    """Latent cells of context each ``tile``-pixel tile is decoded with: the decoder's reach, at
    most one tile; None for a model that is not fully convolutional (its tiles decode alone)."""
    if not isinstance(model, ImageVAE):
        return None
    return decoder_reach(model, max(1, tile // model.config.downsample_factor))
