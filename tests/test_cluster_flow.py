"""docker-compose.yml's flow without Docker: a Ray head and a second raylet (two nodes, as the
compose file's ray-head and ray-gpu-worker), an HTTP S3 server on loopback with the buckets
created at start (as minio and minio-init), both nodes given the S3 environment, and the
encode and decode jobs submitted with ``ray job submit`` over s3:// URLs."""

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
from tests.s3server import free_port, moto_server, s3_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(420)


def _start(args, env):
    return subprocess.Popen(
        [shutil.which("ray", path=env["PATH"]), "start", "--block", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def cluster():
    """(dashboard address, env, endpoint) of a two-node Ray cluster beside an S3 server."""
    with moto_server() as endpoint:
        s3 = s3_env(endpoint)
        env = dict(
            os.environ,
            **s3,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        env.pop("RAY_ADDRESS", None)
        import s3fs

        fs = s3fs.S3FileSystem(
            key=s3["AWS_ACCESS_KEY_ID"],
            secret=s3["AWS_SECRET_ACCESS_KEY"],
            client_kwargs={"endpoint_url": endpoint},
        )
        for bucket in ("raw", "latents"):  # what minio-init does
            fs.mkdir(bucket)
        temp = tempfile.mkdtemp(prefix="vzcl")
        gcs, dashboard = free_port(), free_port()
        head = _start(
            [
                f"--port={gcs}",
                "--head",
                "--num-cpus=1",
                "--num-gpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            ],
            env,
        )
        worker = None
        address = f"http://127.0.0.1:{dashboard}"
        try:
            deadline = time.monotonic() + 120
            while (
                subprocess.run(
                    ["ray", "job", "list", "--address", address], env=env, capture_output=True
                ).returncode
                != 0
            ):
                assert head.poll() is None and time.monotonic() < deadline, "no Ray head"
                time.sleep(2)
            worker = _start(
                [f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"], env
            )
            while "2 node(s)" not in _nodes(gcs, env):
                assert worker.poll() is None and time.monotonic() < deadline, "no second raylet"
                time.sleep(2)
            yield address, env, fs
        finally:
            if worker is not None:
                stop_group(worker)
            stop_group(head)
            shutil.rmtree(temp, ignore_errors=True)


def _nodes(gcs, env) -> str:
    code = "import ray; ray.init(); print(f'{len([n for n in ray.nodes() if n[\"Alive\"]])} node(s)')"
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, RAY_ADDRESS=f"127.0.0.1:{gcs}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout


def _submit(address, env, *args):
    # Ray's head answers `ray job list` before its job agent takes jobs; on a loaded machine a
    # submit can meet "No available agent to submit job, please try again later": as it says
    deadline = time.monotonic() + 90
    while True:
        res = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", ".", "--", "python", "-m", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = res.stdout + res.stderr
        if "No available agent to submit job" not in out or time.monotonic() > deadline:
            return res.returncode, out
        time.sleep(3)


def test_encode_and_decode_on_two_nodes_over_s3(cluster, digits_dir, digits_ckpt):
    address, env, fs = cluster
    fs.put(digits_dir, "raw/digits", recursive=True)
    fs.put(digits_ckpt, "raw/ckpt", recursive=True)
    rc, out = _submit(
        address,
        env,
        "jobs.encode",
        "--input",
        "s3://raw/digits",
        "--checkpoint",
        "s3://raw/ckpt",
        "--output",
        "s3://latents/digits",
        "--calibration-rows",
        "512",
    )
    assert rc == 0 and "encoded 4 shards" in out, out
    assert "pool: 2 x EncodeWorker" in out, out  # one actor on each node
    manifest = json.loads(fs.cat("latents/digits/manifest.json"))
    assert manifest["rows"] == 1797 and manifest["files"] == 4
    rc, out = _submit(
        address,
        env,
        "jobs.decode",
        "--input",
        "s3://latents/digits",
        "--checkpoint",
        "s3://raw/ckpt",
        "--output",
        "s3://latents/restored",
    )
    assert rc == 0, out
    assert json.loads(fs.cat("latents/restored/manifest.json"))["rows"] == 1797
    assert env["AWS_SECRET_ACCESS_KEY"] not in out
