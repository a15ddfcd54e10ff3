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

import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.base import VAE, Posterior
from pipeline.models.config import DiffusersConfig

try:
    from diffusers import AutoencoderKL
except ImportError as err:  # pragma: no cover - depends on the install
    raise ConfigError("this checkpoint wraps a diffusers AutoencoderKL: "
                      "pip install 'vaezip[diffusers]'") from err


def _from_config(autoencoder: dict) -> AutoencoderKL:
    try:
        return AutoencoderKL.from_config(autoencoder)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad AutoencoderKL config: {err}") from err


def config_of(vae: AutoencoderKL) -> DiffusersConfig:
    """The vaezip config of a loaded AutoencoderKL, with its scaling and shift factors."""
    c = dict(vae.config)
    shift = c.get("shift_factor")
    return DiffusersConfig(
        autoencoder={k: v for k, v in c.items() if not k.startswith("_")},
        scaling_factor=float(c.get("scaling_factor") or 1.0),
        shift_factor=float(shift) if shift is not None else 0.0,
        in_channels=int(c.get("in_channels", 3)), latent_channels=int(c.get("latent_channels", 4)),
        downsample_factor=2 ** (len(c.get("block_out_channels", (0,))) - 1))


class DiffusersVAE(VAE):
    config: DiffusersConfig

    def __init__(self, config: DiffusersConfig, vae: AutoencoderKL | None = None) -> None:
        super().__init__(config)
        self.vae = vae if vae is not None else _from_config(config.autoencoder)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        f = self.config.downsample_factor
        return (-(-height // f) * f, -(-width // f) * f)

    def encode(self, x: torch.Tensor) -> Posterior:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        ph, pw = self.padded_size(x.shape[2], x.shape[3])
        if (ph, pw) != tuple(x.shape[2:]):
            x = F.pad(x, (0, pw - x.shape[3], 0, ph - x.shape[2]), mode="replicate")
        dist = self.vae.encode(x * 2.0 - 1.0).latent_dist
        s, b = self.config.scaling_factor, self.config.shift_factor
        return Posterior(mean=(dist.mean - b) * s, logvar=dist.logvar + 2.0 * math.log(s))

    def decode_raw(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        s, b = self.config.scaling_factor, self.config.shift_factor
        out = (self.vae.decode(z / s + b).sample + 1.0) / 2.0
        if size is not None:
            out = out[:, :, : size[0], : size[1]]
        return out

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``sample_shape`` is (C, H, W)."""
        ph, pw = self.padded_size(sample_shape[-2], sample_shape[-1])
        f = self.config.downsample_factor
        return (self.config.latent_channels, ph // f, pw // f)
