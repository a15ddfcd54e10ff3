"""A missed quality bound is never silent: a warning in the summary and job.json, and an error
with --strict-bound (real Ray; the worker's calibration reports a miss, see bound_worker)."""

import json

import pytest

from jobs import encode as encode_job
from tests.bound_worker import MissedBoundWorker, OutOfMemoryInCalibration
from tests.helpers import encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]


def test_a_missed_bound_is_a_warning_in_the_summary_and_job_json(tmp_path, digits_dir, digits_ckpt, capsys):
    assert encode(digits_dir, digits_ckpt, tmp_path / "ok") == 0
    assert "warning" not in capsys.readouterr().out
    assert json.loads((tmp_path / "ok" / "job.json").read_text())["warnings"] == []


@pytest.fixture
def missing(monkeypatch):
    monkeypatch.setattr(encode_job, "EncodeWorker", MissedBoundWorker)


@pytest.mark.usefixtures("missing")
def test_a_missed_bound_warns(tmp_path, digits_dir, digits_ckpt, capsys):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    out = capsys.readouterr().out
    line = "warning: the quantizer missed its bound: loss 0.190 dB measured on the check rows"
    assert line in out and "against --max-loss-db 0.1" in out
    warnings = json.loads((arch / "job.json").read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("the quantizer missed its bound: loss 0.190 dB")


@pytest.mark.usefixtures("missing")
def test_strict_bound_stops_before_any_shard(tmp_path, digits_dir, digits_ckpt, capsys):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch, "--strict-bound") == 2
    err = capsys.readouterr().err
    assert "missed its bound" in err and "--strict-bound: nothing was encoded" in err
    assert not list(arch.glob("*.vz.parquet"))


def test_a_shard_that_runs_calibration_out_of_memory_is_skipped(tmp_path, digits, digits_ckpt, monkeypatch):
    """Calibration skips it with one line (logged by the worker); the job goes on, and the shard,
    which reads fine outside calibration here, is encoded like the others."""
    import numpy as np

    monkeypatch.setattr(encode_job, "EncodeWorker", OutOfMemoryInCalibration)
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", digits[0][:300])
    np.save(folder / "oom.npy", digits[0][300:400])
    arch = tmp_path / "arch"
    assert encode(folder, digits_ckpt, arch) == 0
    assert sorted(p.name for p in arch.glob("*.vz.parquet")) == ["good.vz.parquet", "oom.vz.parquet"]


def test_a_latent_bound_holds_on_the_archived_latents(tmp_path, crop_shards, photos_ckpt, capsys):
    """--max-latent-error: each channel's RMS error within the bound of its spread, fitted on
    half the calibration rows, measured on the others, and measured again over every row."""
    import numpy as np
    import torch

    from jobs import verify as verify_job
    from jobs._cli import run_main
    from pipeline.codec.format import archive_files
    from pipeline.data.archive import iter_latents
    from pipeline.model.checkpoint import load_checkpoint
    from tests.helpers import decode

    arch, bound = tmp_path / "arch", 0.01
    assert encode(crop_shards, photos_ckpt, arch, "--max-latent-error", str(bound)) == 0
    out = capsys.readouterr().out
    q = json.loads((arch / "job.json").read_text())["quantizer"]
    assert q["mode"] == "latent" and q["target_latent_error"] == bound and all(q["active"])
    assert q["measured_latent_error"] <= 1.05 * bound  # on rows the steps were not fitted on
    assert "in the worst channel (bound" in out and "pixels: the loss was not measured" in out
    # every row: the archive's latents against the model's own
    model = load_checkpoint(photos_ckpt).model
    stored = {
        k: z
        for f in archive_files(str(arch))
        for b in iter_latents(f)
        for k, z in zip(b.keys, b.latents, strict=True)
    }
    crops = np.load(f"{crop_shards}/crops-0.npy")
    with torch.inference_mode():
        z = model.encode(torch.from_numpy(crops.transpose(0, 3, 1, 2) / np.float32(255))).mean.numpy()
    mine = np.stack([stored[f"crops-0:{i}"] for i in range(len(crops))])
    rel = np.sqrt(((mine - z) ** 2).mean(axis=(0, 2, 3))) / z.std(axis=(0, 2, 3))
    assert rel.max() <= 1.15 * bound and rel.max() > 0.5 * bound  # held, and not by far more bytes
    rec = tmp_path / "rec"
    assert decode(arch, photos_ckpt, rec) == 0
    argv = [
        "--original",
        crop_shards,
        "--restored",
        str(rec),
        "--archive",
        str(arch),
        "--checkpoint",
        photos_ckpt,
    ]
    assert run_main(verify_job.main, argv) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("latents: RMS error"))
    assert float(line.split("RMS error ")[1].split("%")[0]) <= 115 * bound
