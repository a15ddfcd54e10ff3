"""The one module that knows the model classes: build a VAE from its config."""

from __future__ import annotations

from pipeline.model.nets.base import VAE, Posterior
from pipeline.model.nets.config import (
    ConvConfig,
    DiffusersConfig,
    MLPConfig,
    ModelConfig,
    RDConfig,
    config_from_dict,
    config_to_dict,
    config_to_json,
)
from pipeline.model.nets.conv import ConvVAE
from pipeline.model.nets.mlp import MLPVAE

__all__ = [
    "VAE",
    "Posterior",
    "ConvConfig",
    "DiffusersConfig",
    "MLPConfig",
    "ModelConfig",
    "RDConfig",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "config_to_json",
]


def build_model(config: ModelConfig) -> VAE:
    if isinstance(config, MLPConfig):
        return MLPVAE(config)
    if isinstance(config, ConvConfig):
        return ConvVAE(config)
    if isinstance(config, RDConfig):
        from pipeline.model.nets.rd import RDModel

        return RDModel(config)
    if isinstance(config, DiffusersConfig):
        from pipeline.model.nets.diffusers_vae import DiffusersVAE  # the optional extra

        return DiffusersVAE(config)
    raise TypeError(f"no model for config {type(config).__name__}")
