"""moto's S3 server in its own process, over HTTP on loopback, and the environment that points
s3fs (and botocore) at it."""

from __future__ import annotations

import secrets
import urllib.request

from jobs.benches.moto import free_port, moto_server  # noqa: F401 - the tests' door to it


def s3_env(endpoint: str, key_id: str = "vz-test-key", secret: str | None = None) -> dict[str, str]:
    """The standard variables a user sets for MinIO or another S3-compatible endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret or "vz-secret-" + secrets.token_hex(8),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


def enforce_auth(endpoint: str) -> None:
    """From now on the server checks every request against IAM (moto's reset-auth)."""
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).close()
