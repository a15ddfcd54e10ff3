"""``ray job submit --working-dir . -- python -m jobs.encode ...`` against ``ray start --head``.

The cluster runs with Ray's token authentication on (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), as
the README tells users to run a shared cluster, so the test also shows that the jobs and the
CLI work with it.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import stop_group
from tests.s3server import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def head():
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="vzray")  # short: Ray's socket paths must fit 107 bytes
    dashboard = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("ray", path=env["PATH"]),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                ["ray", "job", "list", "--address", address], env=env, capture_output=True
            ).returncode
            != 0
        ):
            assert proc.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(2)
        yield address, env
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _submit(head, *args: str) -> subprocess.CompletedProcess:
    address, env = head
    return subprocess.run(
        ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--", "python", "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_encode_and_decode_as_submitted_ray_jobs(tmp_path, head, digits_dir, digits_ckpt):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    enc = _submit(
        head,
        "jobs.encode",
        "--input",
        digits_dir,
        "--checkpoint",
        digits_ckpt,
        "--output",
        str(arch),
        "--calibration-rows",
        "512",
    )
    assert enc.returncode == 0 and "succeeded" in enc.stdout + enc.stderr, enc.stdout + enc.stderr
    assert "encoded 4 shards" in enc.stdout + enc.stderr
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["rows"] == 1797 and manifest["files"] == 4
    dec = _submit(
        head, "jobs.decode", "--input", str(arch), "--checkpoint", digits_ckpt, "--output", str(rec)
    )
    assert dec.returncode == 0, dec.stdout + dec.stderr
    assert json.loads((rec / "manifest.json").read_text())["rows"] == 1797


def test_a_failing_job_is_reported_as_failed(tmp_path, head, digits_ckpt):
    res = _submit(
        head,
        "jobs.encode",
        "--input",
        str(tmp_path / "missing"),
        "--checkpoint",
        digits_ckpt,
        "--output",
        str(tmp_path / "arch"),
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "failed" in out
    assert "no such file, folder or bucket" in out
