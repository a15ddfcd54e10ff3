"""The archive's table of contents, written once every shard is complete."""

from __future__ import annotations

import json

from pipeline import storage
from pipeline.completion import read_record
from pipeline.format import FORMAT_VERSION
from pipeline.plan import Shard

MANIFEST = "manifest.json"
FAILURES = "failures.json"


def write_manifest(output: str, shards: list[Shard], job_fingerprint: str, extra: dict) -> dict:
    entries = []
    for s in shards:
        r = read_record(output, s.name)
        entries.append({"name": s.name, "source": s.source, "rows": r.rows if r else None,
                        "bytes": r.bytes if r else None, "sha256": r.sha256 if r else None})
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
