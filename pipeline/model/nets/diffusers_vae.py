"""``diffusers.AutoencoderKL`` behind vaezip's VAE interface (the ``diffusers`` extra).

    x in [0, 1] --pad to the downsampling factor, 2x-1--> AutoencoderKL.encode -> N(mu, var)
      -> latent = (mu - shift_factor) * scaling_factor        (what the diffusion model sees)
    latent -> latent / scaling_factor + shift_factor -> AutoencoderKL.decode -> (x+1)/2 -> crop

The posterior's log-variance is scaled with it (+ 2 log scaling_factor), so the quantizer's
posterior mode sees sigma in the same units as the latent. Import a model with
``python -m jobs.import_diffusers --source FOLDER --output CKPT``: from then on it is an
ordinary vaezip checkpoint (safetensors + JSON, fingerprinted), rebuilt from its config with
no download.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.core.errors import ConfigError
from pipeline.model.nets.base import ImageVAE, Posterior
from pipeline.model.nets.config import DiffusersConfig

try:
    from diffusers import AutoencoderKL
except ImportError as err:  # pragma: no cover - depends on the install
    raise ConfigError(
        "this checkpoint wraps a diffusers AutoencoderKL: pip install 'vaezip[diffusers]'"
    ) from err


def _from_config(autoencoder: dict) -> AutoencoderKL:
    try:
        return AutoencoderKL.from_config(autoencoder)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad AutoencoderKL config: {err}") from err


def config_of(vae: Any) -> DiffusersConfig:
    """The vaezip config of a loaded AutoencoderKL, with its scaling and shift factors."""
    c = dict(vae.config)
    shift = c.get("shift_factor")
    return DiffusersConfig(
        autoencoder={k: v for k, v in c.items() if not k.startswith("_")},
        scaling_factor=float(c.get("scaling_factor") or 1.0),
        shift_factor=float(shift) if shift is not None else 0.0,
        in_channels=int(c.get("in_channels", 3)),
        latent_channels=int(c.get("latent_channels", 4)),
        downsample_factor=2 ** (len(c.get("block_out_channels", (0,))) - 1),
    )


class DiffusersVAE(ImageVAE):
    config: DiffusersConfig

    def __init__(self, config: DiffusersConfig, vae: AutoencoderKL | None = None) -> None:
        super().__init__(config)
        # Any: diffusers is an optional extra, and its classes are not typed for mypy here.
        self.vae: Any = vae if vae is not None else _from_config(config.autoencoder)

    def encode(self, x: torch.Tensor) -> Posterior:
        dist = self.vae.encode(self.padded_input(x) * 2.0 - 1.0).latent_dist
        s, b = self.config.scaling_factor, self.config.shift_factor
        return Posterior(mean=(dist.mean - b) * s, logvar=dist.logvar + 2.0 * math.log(s))

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        s, b = self.config.scaling_factor, self.config.shift_factor
        return self.cropped((self.vae.decode(z / s + b).sample + 1.0) / 2.0, size)
