"""The archive's table of contents, written once every shard is complete."""

from __future__ import annotations

import json

from pipeline import storage
from pipeline.format import FORMAT_VERSION
from pipeline.plan import Shard, read_done

MANIFEST = "manifest.json"
FAILURES = "failures.json"


def write_manifest(output: str, shards: list[Shard], job_fingerprint: str, extra: dict) -> dict:
    entries = []
    for s in shards:
        r = read_done(output, s.name) or {}
        entries.append({"name": s.name, "source": s.source, "rows": r.get("rows"),
                        "bytes": r.get("bytes"), "sha256": r.get("sha256")})
    manifest = {"format_version": FORMAT_VERSION, "job_fingerprint": job_fingerprint,
                "shards": entries, "rows": sum(e["rows"] or 0 for e in entries),
                "bytes": sum(e["bytes"] or 0 for e in entries), **extra}
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest


def write_failures(output: str, failures: list[dict]) -> None:
    uri = storage.join(output, FAILURES)
    if failures:
        storage.write_bytes(uri, json.dumps(failures, indent=2).encode())
    else:
        storage.remove(uri)
