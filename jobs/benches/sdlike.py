"""An SD-like autoencoder for the rate-control benchmark, built here (nothing is downloaded).

A small ``diffusers`` AutoencoderKL with the Stable Diffusion VAE's layout (4 latent channels,
conv blocks, group norms) is trained for a fixed number of steps on the demo's photo crops with
the SD VAE's objective as far as it matters here: reconstruction plus a KL weight of 1e-6, so
its posterior is nearly deterministic. Its log-variance outputs are then pinned very low (bias
-30, sigma about 3e-7), as the real SD VAEs' are, so the posterior-step quantizer meets the
same degenerate case it meets there (every channel falls back to 8 bits). It is saved with
``save_pretrained`` and imported with ``jobs.import_diffusers``, as a user imports a real one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from jobs import import_diffusers
from jobs._cli import run_main

KL_WEIGHT = 1e-6


def train(
    crops: np.ndarray,
    out: str,
    steps: int = 300,
    batch: int = 32,
    seed: int = 0,
    blocks: tuple[int, ...] = (32, 64),
) -> str:
    """``crops`` (N, H, W, 3) uint8 -> a vaezip checkpoint folder (returned). ``blocks``: the
    channels of each encoder block; each but the last halves the size (SD-1.x: four, factor 8)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x_all = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1  # SD's -1..1
    rng = np.random.default_rng(seed)
    vae.train()
    for _ in range(steps):
        x = x_all[rng.choice(len(x_all), batch, replace=False)]
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        loss = torch.mean((y - x) ** 2) + KL_WEIGHT * post.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        vae.quant_conv.bias[4:] = -30.0  # log-variances as small as the SD VAEs'
    folder = os.path.join(out, "diffusers")
    vae.save_pretrained(folder)
    ckpt = os.path.join(out, "checkpoint")
    if run_main(import_diffusers.main, ["--source", folder, "--output", ckpt]) != 0:
        raise RuntimeError("import of the SD-like VAE failed")
    return ckpt
