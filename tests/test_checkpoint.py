import hashlib
import json
import os
import pickle

import pytest
import torch

from pipeline.core.errors import CheckpointError
from pipeline.model.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint
from pipeline.model.nets import ConvConfig, MLPConfig, build_model


@pytest.mark.parametrize(
    "config",
    [
        MLPConfig(input_dim=20, latent_dim=3, hidden_dims=(7,)),
        ConvConfig(in_channels=3, base_channels=4, downsample_factor=8),
    ],
)
def test_round_trip_needs_no_flags_and_gives_identical_outputs(tmp_path, config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    fp = save_checkpoint(model, str(tmp_path / "ckpt"), training={"seed": 0})
    assert fp == hashlib.sha256((tmp_path / "ckpt" / WEIGHTS).read_bytes()).hexdigest()
    ckpt = load_checkpoint(str(tmp_path / "ckpt"))
    assert ckpt.config == config and ckpt.fingerprint == fp and ckpt.training == {"seed": 0}
    x = torch.rand(2, 20) if config.kind == "mlp" else torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(model.encode(x).mean, ckpt.model.encode(x).mean)
        z = model.encode(x).mean
        assert torch.equal(model.decode(z), ckpt.model.decode(z))


def test_memory_url(tmp_path):
    model = build_model(MLPConfig(input_dim=4, hidden_dims=(4,)))
    fp = save_checkpoint(model, "memory://ckpts/a")
    assert load_checkpoint("memory://ckpts/a").fingerprint == fp


@pytest.fixture
def ckpt_dir(tmp_path):
    save_checkpoint(build_model(MLPConfig(input_dim=8, hidden_dims=(4,))), str(tmp_path / "c"))
    return tmp_path / "c"


def test_truncated_weights_are_refused(ckpt_dir):
    w = ckpt_dir / WEIGHTS
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or were changed"):
        load_checkpoint(str(ckpt_dir))


def test_tampered_weights_are_refused(ckpt_dir):
    w = ckpt_dir / WEIGHTS
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(str(ckpt_dir))


def test_weights_that_match_a_forged_hash_but_are_not_safetensors(ckpt_dir):
    blob = b"\x00" * 64
    (ckpt_dir / WEIGHTS).write_bytes(blob)
    meta = json.loads((ckpt_dir / CONFIG).read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (ckpt_dir / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(str(ckpt_dir))


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_a_planted_pickle_is_never_unpickled(ckpt_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blob = pickle.dumps({"encoder.0.weight": _Boom()})
    (ckpt_dir / WEIGHTS).write_bytes(blob)
    meta = json.loads((ckpt_dir / CONFIG).read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (ckpt_dir / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(ckpt_dir))
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(version=99), "version 99"),
        (lambda m: m.update(format="other"), "not a vaezip checkpoint"),
        (lambda m: m["model"].update(kind="gan"), "unknown model kind"),
        (lambda m: m["model"].update(latent_dim=5), "do not fit the config"),
    ],
)
def test_bad_config_json_is_refused(ckpt_dir, edit, match):
    meta = json.loads((ckpt_dir / CONFIG).read_text())
    edit(meta)
    (ckpt_dir / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(str(ckpt_dir))


def test_missing_and_garbled(tmp_path, ckpt_dir):
    with pytest.raises(CheckpointError, match="no checkpoint config"):
        load_checkpoint(str(tmp_path / "nowhere"))
    (ckpt_dir / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(str(ckpt_dir))
