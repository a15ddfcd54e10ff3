"""Model configs: frozen, validated at construction, serialised as JSON.

A config fully describes an architecture, so a checkpoint's JSON is enough to rebuild the
model with no flags (as nanoGPT's checkpoints carry their own model arguments).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.errors import ConfigError

Likelihood = Literal["gaussian", "bernoulli"]
LIKELIHOODS = ("gaussian", "bernoulli")


def _check_likelihood(value: str) -> None:
    if value not in LIKELIHOODS:
        raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {value!r}")


@dataclass(frozen=True)
class MLPConfig:
    """An MLP VAE over flat vectors: input_dim -> hidden_dims -> latent_dim (and back)."""

    input_dim: int
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256, 128)
    likelihood: Likelihood = "gaussian"
    kind: Literal["mlp"] = "mlp"

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.latent_dim < 1:
            raise ConfigError("input_dim and latent_dim must be positive")
        if any(h < 1 for h in self.hidden_dims):
            raise ConfigError(f"hidden_dims must be positive, got {self.hidden_dims}")
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        _check_likelihood(self.likelihood)


@dataclass(frozen=True)
class ConvConfig:
    """A fully convolutional VAE for images of any size.

    ``downsample_factor`` is 4 or 8 (two or three stride-2 stages); each latent position covers
    a factor x factor patch and holds ``latent_channels`` numbers.
    """

    in_channels: int = 3
    latent_channels: int = 8
    downsample_factor: int = 4
    base_channels: int = 64
    likelihood: Likelihood = "gaussian"
    kind: Literal["conv"] = "conv"

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.downsample_factor not in (4, 8):
            raise ConfigError(f"downsample_factor must be 4 or 8, got {self.downsample_factor}")
        if self.latent_channels < 1 or self.base_channels < 1:
            raise ConfigError("latent_channels and base_channels must be positive")
        _check_likelihood(self.likelihood)


@dataclass(frozen=True)
class DiffusersConfig:
    """A pretrained ``diffusers.AutoencoderKL`` (the Stable Diffusion / SDXL / FLUX VAEs).

    ``autoencoder`` is the AutoencoderKL's own config (its ``config.json``), enough to rebuild
    the network with no download; the weights are this checkpoint's safetensors. Latents are
    what the diffusion model expects: ``(z - shift_factor) * scaling_factor``.
    """

    autoencoder: dict[str, Any]
    scaling_factor: float
    shift_factor: float = 0.0
    in_channels: int = 3
    latent_channels: int = 4
    downsample_factor: int = 8
    likelihood: Likelihood = "gaussian"
    kind: Literal["diffusers"] = "diffusers"

    def __post_init__(self) -> None:
        if not isinstance(self.autoencoder, dict):
            raise ConfigError("diffusers autoencoder config must be a JSON object")
        if not self.scaling_factor > 0:
            raise ConfigError(f"scaling_factor must be positive, got {self.scaling_factor}")
        if self.in_channels not in (1, 3) or self.latent_channels < 1 or self.downsample_factor < 1:
            raise ConfigError(
                "bad diffusers config: in_channels 1 or 3, positive latent channels and downsample factor"
            )
        _check_likelihood(self.likelihood)


PRIORS = ("hyperprior", "factorized")


RD_FACTORS = (4, 8, 16)  # two, three or four stride-2 stages
GDN_PARAMS = ("squared", "abs")


@dataclass(frozen=True)
class RDConfig:
    """A learned image codec trained for rate and distortion (pipeline.model.nets.rd): latents
    at 1/``downsample_factor`` of each side (16 for photos; 4 or 8 for small images such as the
    8x8 digits), coded under a learned prior; ``prior`` "hyperprior" adds side information at
    a further 1/4 that predicts each latent's scale."""

    in_channels: int = 3
    latent_channels: int = 96  # M
    hidden_channels: int = 64  # N: the transforms' width and the hyper-latent's channels
    prior: Literal["hyperprior", "factorized"] = "hyperprior"
    downsample_factor: int = 16
    likelihood: Likelihood = "gaussian"
    # how GDN keeps its terms positive (pipeline.model.nets.rd.GDN), and the hidden widths of
    # the factorized prior's cumulative functions. The defaults are the first rd models' (so a
    # checkpoint written before these fields existed builds the same model); CompressAI's
    # "squared" and (3, 3, 3, 3) were no better at 500 steps (docs/BENCHMARK_NOTES.md)
    gdn: Literal["squared", "abs"] = "abs"
    density_filters: tuple[int, ...] = (3, 3, 3)
    kind: Literal["rd"] = "rd"

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.downsample_factor not in RD_FACTORS:
            raise ConfigError(
                f"the rd model's downsample_factor must be one of {RD_FACTORS}, got {self.downsample_factor}"
            )
        if self.latent_channels < 1 or self.hidden_channels < 1:
            raise ConfigError("latent_channels and hidden_channels must be positive")
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.likelihood != "gaussian":
            raise ConfigError("the rd model's distortion is squared error: likelihood must be gaussian")
        if self.gdn not in GDN_PARAMS:
            raise ConfigError(f"gdn must be one of {GDN_PARAMS}, got {self.gdn!r}")
        filters = tuple(self.density_filters)
        if not 1 <= len(filters) <= 8 or any(not isinstance(f, int) or not 1 <= f <= 64 for f in filters):
            raise ConfigError(
                f"density_filters must be 1 to 8 widths of 1 to 64, got {self.density_filters!r}"
            )
        object.__setattr__(self, "density_filters", filters)


ModelConfig = MLPConfig | ConvConfig | DiffusersConfig | RDConfig
_KINDS: dict[str, type] = {"mlp": MLPConfig, "conv": ConvConfig, "diffusers": DiffusersConfig, "rd": RDConfig}


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    for key in ("hidden_dims", "density_filters"):
        if key in out:
            out[key] = list(out[key])
    return out


def config_from_dict(data: object) -> ModelConfig:
    """Rebuild a config from untrusted JSON: unknown kinds and fields are refused."""
    if not isinstance(data, dict):
        raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"unknown model kind {kind!r}; expected one of {sorted(_KINDS)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {kind} config fields: {sorted(unknown)}")
    values = dict(data)
    if "hidden_dims" in values:
        values["hidden_dims"] = tuple(values["hidden_dims"])
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"bad {kind} config: {err}") from err


def config_to_json(config: ModelConfig) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)
