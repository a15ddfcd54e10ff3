"""Checkpoints: a folder holding ``model.safetensors`` and ``config.json``.

    ckpt/
      model.safetensors   weights only (safetensors: no code runs on load)
      config.json         {"format": "vaezip-checkpoint", "version": 1, "model": {...},
                           "weights_sha256": "...", "training": {...},
                           "value_range": [LO, HI]}   (the data units [0, 1] stands for;
                                                       absent: pipeline.data.samples' defaults)

The fingerprint is the sha256 of the weights file's bytes. It is recorded in config.json and
checked on every load, so a truncated or edited weights file is refused rather than used, and
it is stamped into every archive so a decode can refuse a different model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline.core import storage
from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.core.value_range import ValueRange
from pipeline.model.nets import VAE, ModelConfig, build_model, config_from_dict, config_to_dict

FORMAT = "vaezip-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class Checkpoint:
    model: VAE
    config: ModelConfig
    fingerprint: str
    uri: str
    training: dict[str, Any] = field(default_factory=dict)
    value_range: ValueRange | None = None  # what the model's [0, 1] stands for


def save_checkpoint(
    model: VAE, uri: str, training: dict[str, Any] | None = None, value_range: ValueRange | None = None
) -> str:
    """Write the checkpoint folder at ``uri``; returns the fingerprint."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state)
    fingerprint = hashlib.sha256(blob).hexdigest()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": config_to_dict(model.config),
        "weights_sha256": fingerprint,
        "training": training or {},
    }
    if value_range is not None:
        meta["value_range"] = value_range.to_list()
    storage.write_bytes(storage.join(uri, WEIGHTS), blob)
    storage.write_bytes(storage.join(uri, CONFIG), json.dumps(meta, indent=2).encode())
    return fingerprint


def read_checkpoint_meta(uri: str) -> dict[str, Any]:
    path = storage.join(uri, CONFIG)
    try:
        meta = json.loads(storage.read_bytes(path))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no checkpoint config (is {uri} a checkpoint folder?)") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaezip checkpoint config")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {meta.get('version')!r}, this vaezip reads version {VERSION}"
        )
    return meta


def _verified(uri: str) -> tuple[dict[str, Any], ModelConfig, bytes, str]:
    meta = read_checkpoint_meta(uri)
    try:
        config = config_from_dict(meta.get("model"))
        ValueRange.of(meta.get("value_range"))
    except ConfigError as err:
        raise CheckpointError(f"{storage.join(uri, CONFIG)}: {err}") from err
    path = storage.join(uri, WEIGHTS)
    try:
        blob = storage.read_bytes(path)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: weights file is missing") from err
    fingerprint = hashlib.sha256(blob).hexdigest()
    if fingerprint != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{path}: sha256 {fingerprint[:12]}... does not match the recorded "
            f"{str(meta.get('weights_sha256'))[:12]}...; the weights are truncated or were changed"
        )
    return meta, config, blob, fingerprint


def verify_checkpoint(uri: str) -> str:
    """Check config and weights against their recorded sha256 without building the model;
    returns the fingerprint. Drivers call this before starting any worker."""
    return _verified(uri)[3]


def load_checkpoint(uri: str, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint; never unpickles. Raises CheckpointError when unusable."""
    meta, config, blob, fingerprint = _verified(uri)
    path = storage.join(uri, WEIGHTS)
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the config: {err}") from err
    model.to(device).eval()
    return Checkpoint(
        model=model,
        config=config,
        fingerprint=fingerprint,
        uri=uri,
        training=meta.get("training") or {},
        value_range=ValueRange.of(meta.get("value_range")),
    )
