"""docker-compose.yml: every published port is bound to loopback (Ray's dashboard and job API
run code for whoever reaches them), and credentials come from the environment."""

from pathlib import Path

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
