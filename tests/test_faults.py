"""Faults injected for real: actors SIGKILLed mid-shard, the driver SIGKILLed mid-job.

After each, the job (or its re-run) must give the same archive as a clean run: the same files,
byte for byte, hence the same keys and codes, and byte-equal decoded outputs.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.faults import ARGS, Killer, files, wait_gone
from tests.helpers import decode, encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory, crop_shards, photos_ckpt):
    """The reference: a run nothing happened to, and its decoded outputs."""
    arch, rec = tmp_path_factory.mktemp("clean") / "arch", tmp_path_factory.mktemp("clean") / "rec"
    assert encode(crop_shards, photos_ckpt, arch, *ARGS) == 0
    assert decode(arch, photos_ckpt, rec) == 0
    return arch, rec


def assert_same_archive(arch: Path, rec: Path, clean) -> None:
    assert files(arch, "*.vz.parquet") == files(clean[0], "*.vz.parquet")
    assert not list(arch.rglob("*.tmp"))  # no temporary file left over
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["rows"] == json.loads((clean[0] / "manifest.json").read_text())["rows"]
    table = pq.read_table(arch / "_manifest" / "files.parquet").to_pylist()
    assert table == pq.read_table(clean[0] / "_manifest" / "files.parquet").to_pylist()
    assert files(rec, "*.npy") == files(clean[1], "*.npy")
    assert files(rec, "*.keys.parquet") == files(clean[1], "*.keys.parquet")


def test_actors_killed_mid_shard(tmp_path, crop_shards, photos_ckpt, clean, caplog):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    killer = Killer("ray::EncodeWorker.process", times=3)
    killer.start()
    try:
        assert encode(crop_shards, photos_ckpt, arch, *ARGS, "--max-attempts", "4") == 0
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 3  # three actors died mid-shard
    assert caplog.text.count("actor died on shard") == 3
    killer = Killer("ray::DecodeWorker.process", times=2)
    killer.start()
    try:
        assert decode(arch, photos_ckpt, rec, "--max-attempts", "4") == 0
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 2
    assert_same_archive(arch, rec, clean)


def test_driver_killed_then_rerun_finishes_only_what_is_missing(
    tmp_path, crop_shards, photos_ckpt, clean, capsys
):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.encode",
            "--input",
            crop_shards,
            "--checkpoint",
            photos_ckpt,
            "--output",
            str(arch),
            "--calibration-rows",
            "512",
            *ARGS,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (arch / "_done").is_dir() or not any((arch / "_done").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "no shard finished"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray
    proc.wait()
    stderr.close()
    # its own local Ray keeps token authentication on without announcing it on every job
    assert "Token authentication" not in (tmp_path / "stderr.txt").read_text()
    wait_gone("ray::EncodeWorker")
    done_before = len(list((arch / "_done").iterdir()))
    assert 1 <= done_before < 8, "the kill should land mid-job"
    for f in arch.glob("*.vz.parquet"):  # nothing half-written is visible
        pq.read_metadata(f)
    capsys.readouterr()
    assert encode(crop_shards, photos_ckpt, arch, *ARGS) == 0
    out = capsys.readouterr().out
    redone, skipped = map(int, re.search(r"encoded (\d+) shards \((\d+) already complete", out).groups())
    assert (redone, skipped) == (8 - done_before, done_before)
    assert decode(arch, photos_ckpt, rec) == 0
    assert_same_archive(arch, rec, clean)
