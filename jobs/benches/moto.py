"""moto's S3 server in its own process, over HTTP on loopback: for the S3 benchmark and tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(log: str | None = None) -> Iterator[str]:
    """The server's endpoint while it runs; ``log``: a file for its request log (one line a
    request), else nowhere."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto's server exited") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start in 60 s") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def s3_env(log: str | None = None) -> Iterator[tuple[Any, dict[str, str]]]:
    """moto's server with this process's AWS variables pointed at it (put back afterwards):
    (an s3fs filesystem on it, the variables, for the jobs this starts)."""
    with moto_server(log) as endpoint:
        env = {
            "AWS_ACCESS_KEY_ID": "vz-bench",
            "AWS_SECRET_ACCESS_KEY": "vz-bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import s3fs

            yield s3fs.S3FileSystem(skip_instance_cache=True), env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
