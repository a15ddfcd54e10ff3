"""How many requests a read costs on a real HTTP S3 server (moto, its request log counted)."""

import io
import json
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


@pytest.mark.timeout(400)
def test_a_re_run_of_a_half_done_job_sends_no_request_for_its_done_half(logged_s3, digits_dir, digits_ckpt):
    """Two of four inputs are broken at first (their shards fail, so no manifest is written);
    once they are mended, the re-run finishes them and judges the other two by the progress
    tables the first run's driver wrote: not one request names a shard that was done. The
    same for a decode whose two archive files were damaged, then put back. The archive is fanned
    out in two sub-folders (--fan-out), as a bucket of millions of files would be."""
    import ray

    from pipeline.core.names import fanned
    from pipeline.ledger.manifest import PROGRESS_DIR
    from tests.helpers import decode, encode

    client, log = logged_s3
    for bucket in ("data", "arch"):
        client.create_bucket(Bucket=bucket)
    names = sorted(os.listdir(digits_dir))
    good = {n: open(os.path.join(digits_dir, n), "rb").read() for n in names}
    broken = names[1:3]
    for n in names:
        client.put_object(Bucket="data", Key=n, Body=b"not an npz" if n in broken else good[n])
    done = [n.split(".")[0] for n in names if n not in broken]
    fs = s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert encode("s3://data", digits_ckpt, "s3://arch/a", "--fan-out", "2") == 1  # two shards failed
        assert not fs.exists("arch/a/manifest.json") and fs.ls(f"arch/a/{PROGRESS_DIR}")
        # a broken input small enough to be read in one GET is told as on a disk, and not retried
        failures = json.loads(fs.cat("arch/a/failures.json"))
        assert [(f["source"], f["attempts"]) for f in failures] == [(f"s3://data/{n}", 1) for n in broken]
        assert all("not a readable .npz archive" in f["error"] for f in failures), failures
        for n in broken:
            client.put_object(Bucket="data", Key=n, Body=good[n])
        start = _lines(log)
        assert encode("s3://data", digits_ckpt, "s3://arch/a", "--fan-out", "2") == 0
        for stem in done:
            assert _requests_for(log, start, stem) == {}, stem
        for stem in (n.split(".")[0] for n in broken):  # ... where the mended ones were read
            assert _requests_for(log, start, f"/data/{stem}").get("GET", 0) >= 1
        manifest = json.loads(fs.cat("arch/a/manifest.json"))
        assert (manifest["files"], manifest["missing"], manifest["rows"]) == (4, 0, 1797)
        assert not fs.exists(f"arch/a/{PROGRESS_DIR}")  # the manifest says it all

        archived = {s: fs.cat(f"arch/a/{fanned(s + '.vz.parquet', 2)}") for s in done}
        for s in done:
            fs.pipe(f"arch/a/{fanned(s + '.vz.parquet', 2)}", b"damaged")
        assert decode("s3://arch/a", digits_ckpt, "s3://arch/d") == 1
        for s, blob in archived.items():
            fs.pipe(f"arch/a/{fanned(s + '.vz.parquet', 2)}", blob)
        start = _lines(log)
        assert decode("s3://arch/a", digits_ckpt, "s3://arch/d") == 0
        for stem in (n.split(".")[0] for n in broken):  # decoded in the first run
            assert _requests_for(log, start, stem) == {}, stem
        assert json.loads(fs.cat("arch/d/manifest.json"))["files"] == 4
    finally:
        ray.shutdown()
