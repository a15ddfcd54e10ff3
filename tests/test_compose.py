"""docker-compose.yml: every published port is bound to loopback (Ray's dashboard and job API
run code for whoever reaches them), and credentials come from the environment."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_every_published_port_is_bound_to_loopback():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = [(name, p) for name, svc in services.items() for p in svc.get("ports", [])]
    assert {name for name, _ in published} >= {"ray-head", "minio"}
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)


def test_no_secret_is_written_into_the_file():
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if "SECRET" in line or "PASSWORD" in line:
            value = line.split(":", 1)[1].strip()
            assert value.startswith("${") or value.startswith("*") or "$$" in value or not value, line


def _compose_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MINIO_ROOT_PASSWORD": "x"},
    )


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="Debian's docker-compose is not installed (.ci/run installs it with apt)",
)
def test_docker_compose_config_accepts_the_file_and_rejects_a_broken_one(tmp_path):
    ok = _compose_config(COMPOSE)
    assert ok.returncode == 0, ok.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["ray-head"]["ports"] = 8265  # must be a list
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    res = _compose_config(bad)
    assert res.returncode != 0 and "ports" in res.stderr


def test_services_are_what_the_walkthrough_needs():
    c = yaml.safe_load(COMPOSE.read_text())
    services = c["services"]
    assert {"minio", "minio-init", "ray-head", "ray-gpu-worker"} <= set(services)
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "--num-gpus" in services["ray-gpu-worker"]["command"]
    assert "ray-head:6379" in services["ray-gpu-worker"]["command"]
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in init["entrypoint"] and "local/raw" in init["entrypoint"]
    for name in ("ray-head", "ray-gpu-worker"):
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    # the cluster's Ray must be the Ray the users' `ray job submit` speaks to
    import ray

    for name in ("ray-head", "ray-gpu-worker"):
        assert services[name]["image"].startswith(f"rayproject/ray:{ray.__version__}-"), services[name][
            "image"
        ]
