"""How many requests a read costs on a real HTTP S3 server (moto, its request log counted)."""

import io
import os

import boto3
import numpy as np
import pytest
import s3fs

from jobs.benches.scale import count_requests
from pipeline.data.readers import ReadOptions, iter_batches
from tests.s3server import moto_server, s3_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def logged_s3(tmp_path, monkeypatch):
    log = str(tmp_path / "moto.log")
    with moto_server(log) as endpoint:
        for k, v in s3_env(endpoint).items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield boto3.client("s3"), log
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


def _requests_for(log: str, since: int, key: str) -> dict[str, int]:
    with open(log) as f:
        lines = f.readlines()[since:]
    return dict(count_requests([line for line in lines if key in line]))


def _lines(log: str) -> int:
    with open(log) as f:
        return len(f.readlines())


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_a_listed_input_is_read_without_asking_its_size(logged_s3, fmt):
    client, log = logged_s3
    client.create_bucket(Bucket="data")
    arr = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    buf = io.BytesIO()
    np.save(buf, arr) if fmt == "npy" else np.savez(buf, images=arr)
    blob = buf.getvalue()
    client.put_object(Bucket="data", Key=f"a.{fmt}", Body=blob)
    uri = f"s3://data/a.{fmt}"

    start = _lines(log)
    told = [b.samples for b in iter_batches(uri, ReadOptions(source_bytes=len(blob)))]
    with_size = _requests_for(log, start, f"/data/a.{fmt}")
    start = _lines(log)
    asked = [b.samples for b in iter_batches(uri, ReadOptions())]
    without = _requests_for(log, start, f"/data/a.{fmt}")

    assert np.array_equal(np.stack(told[0]), arr) and np.array_equal(np.stack(asked[0]), arr)
    assert "HEAD" not in with_size and with_size.get("GET", 0) >= 1, with_size
    assert without.get("HEAD", 0) >= 1, without  # the request the listed size spares
    assert os.path.getsize(log) > 0
