"""Encode and decode against a real HTTP S3 server (moto, in its own process) through s3fs.

Credentials and the endpoint come from the standard AWS variables, as a user would set them
for MinIO or AWS; the Ray workers inherit them. The secret must never reach logs or files.
"""

import json
import os
import subprocess
import sys

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import s3fs

from pipeline.core import storage
from tests.helpers import decode, direct_reconstructions, encode
from tests.s3server import enforce_auth, moto_server, s3_env

pytestmark = pytest.mark.timeout(300)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def s3(digits_dir):
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        env = s3_env(endpoint)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3")
        for bucket in ("data", "arch"):
            client.create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem()
        fs.put(digits_dir, "data/digits", recursive=True)
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
        try:
            yield env, client
        finally:
            ray.shutdown()
            s3fs.S3FileSystem.clear_instance_cache()


def test_encode_and_decode_through_s3(tmp_path, s3, digits_ckpt, capfd):
    env, client = s3
    assert encode("s3://data/digits", digits_ckpt, "s3://arch/digits") == 0
    assert decode("s3://arch/digits", digits_ckpt, "s3://arch/restored") == 0
    fs = s3fs.S3FileSystem()
    names = sorted(os.path.basename(p) for p in fs.ls("arch/digits"))
    assert names == [
        "_done",
        "_manifest",
        *[f"digits-{i:05d}.vz.parquet" for i in range(4)],
        "encode.config.yaml",
        "job.json",
        "manifest.json",
    ]
    local = tmp_path / "arch"
    fs.get("arch/digits/", str(local), recursive=True)
    direct = direct_reconstructions(str(local), digits_ckpt)
    for i in range(4):
        stem = f"arch/restored/digits-{i:05d}"
        restored = np.load(fs.open(stem + ".npy"))
        keys = pq.read_table(stem + ".keys.parquet", filesystem=fs)["key"].to_pylist()
        assert all(np.array_equal(direct[k], r) for k, r in zip(keys, restored, strict=True))
    assert (
        sum(len(pq.read_table(f"arch/digits/digits-{i:05d}.vz.parquet", filesystem=fs)) for i in range(4))
        == 1797
    )
    secret = env["AWS_SECRET_ACCESS_KEY"]
    out = capfd.readouterr()
    written = b"".join(fs.cat(p) for p in fs.find("arch"))
    assert secret not in out.out + out.err and secret.encode() not in written

    # a training reader over the bucket keeps each file in a local cache after its first read
    from pipeline.core.errors import InputError
    from pipeline.loaders.torch_data import ArchiveDataset

    cache = tmp_path / "cache"
    ds = ArchiveDataset("s3://arch/digits", cache_dir=str(cache), columns=[])
    first = [(i["key"], i["latent"]) for i in ds]
    assert len(first) == 1797 and len(list(cache.iterdir())) == 4
    fs.rm("arch/digits/digits-00001.vz.parquet")  # the second epoch does not go to the bucket
    second = [(i["key"], i["latent"]) for i in ds]
    assert [k for k, _ in second] == [k for k, _ in first]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    victim = sorted(cache.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")  # a cached copy damaged on the local disk
    with pytest.raises(
        InputError, match=f"{victim.name}: cached copy of s3://arch/digits/.*sha256 does not match"
    ):
        list(ds)


def test_a_failed_upload_leaves_no_object(s3):
    _, client = s3
    for size in (1000, 60 * 2**20):  # one PUT on close; past s3fs's 50 MiB block: multipart
        uri = f"s3://arch/partial-{size}.bin"
        with pytest.raises(RuntimeError, match="boom"):
            with storage.atomic_write(uri) as f:
                f.write(os.urandom(size))
                raise RuntimeError("boom")
        assert not storage.exists(uri)
    assert not client.list_multipart_uploads(Bucket="arch").get("Uploads")
    storage.write_bytes("s3://arch/whole.bin", b"x" * 10)
    assert storage.read_bytes("s3://arch/whole.bin") == b"x" * 10


def test_a_writer_killed_mid_upload_leaves_no_object(s3):
    script = (
        "import os, sys, time\n"
        "from pipeline.core import storage\n"
        "with storage.atomic_write('s3://arch/killed.bin') as f:\n"
        "    for _ in range(80):\n"
        "        f.write(os.urandom(2**20)); f.flush(); time.sleep(0.02)\n"
        "        print('MiB', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, text=True
    )
    for _ in range(56):  # past s3fs's 50 MiB block: a multipart upload has begun
        assert proc.stdout.readline().startswith("MiB")
    proc.kill()
    proc.wait()
    _, client = s3
    assert client.list_multipart_uploads(Bucket="arch").get("Uploads")  # it was mid-upload
    assert not storage.exists("s3://arch/killed.bin")


def test_an_output_is_claimed_exclusively_on_s3_too(s3):
    """The claim is a conditional PUT (If-None-Match): the second writer is told no. (Placed
    before the test that turns on IAM enforcement for the rest of the module.)"""
    from pipeline.core.errors import ConfigError
    from pipeline.ledger.claim import claim

    assert storage.create_exclusive("s3://arch/claimed/x.json", b"first")
    assert not storage.create_exclusive("s3://arch/claimed/x.json", b"second")
    assert storage.read_bytes("s3://arch/claimed/x.json") == b"first"
    with claim("s3://arch/claimed", "encode"):
        with pytest.raises(ConfigError, match="is in use by another encode driver"):
            with claim("s3://arch/claimed", "decode"):
                pass
    assert not storage.exists("s3://arch/claimed/_claim.json")


def test_missing_bucket_is_one_clear_error(tmp_path, s3, digits_ckpt, capsys):
    assert encode("s3://no-such-bucket/digits", digits_ckpt, tmp_path / "arch") == 2
    assert "s3://no-such-bucket/digits: no such file, folder or bucket" in capsys.readouterr().err


def test_permission_denied_fails_that_shard_only(tmp_path, s3, digits_ckpt):
    """Last in this module: it turns on the server's IAM checks."""
    env, _ = s3
    iam = boto3.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-most",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:ListBucket", "s3:GetObject"],
                        "Resource": ["arn:aws:s3:::data", "arn:aws:s3:::data/*"],
                    },
                    {
                        "Effect": "Deny",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::data/digits/digits-00001.npz",
                    },
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    enforce_auth(env["AWS_ENDPOINT_URL"])
    reader = s3_env(env["AWS_ENDPOINT_URL"], key["AccessKeyId"], key["SecretAccessKey"])
    arch = tmp_path / "arch"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.encode",
            "--input",
            "s3://data/digits",
            "--checkpoint",
            digits_ckpt,
            "--output",
            str(arch),
            "--calibration-rows",
            "256",
        ],
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, **reader}.items() if k != "RAY_ADDRESS"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 1, res.stderr
    failures = json.loads((arch / "failures.json").read_text())
    assert [f["shard"] for f in failures] == ["digits-00001.vz.parquet"]
    assert "s3://data/digits/digits-00001.npz: permission denied" in failures[0]["error"]
    done = sorted(p.name for p in (arch / "_done").iterdir())
    assert done == [f"digits-{i:05d}.vz.parquet.json" for i in (0, 2, 3)]
    assert key["SecretAccessKey"] not in res.stdout + res.stderr
