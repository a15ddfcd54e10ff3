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
