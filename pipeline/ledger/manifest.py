"""The archive's table of contents, written once every shard is complete."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pipeline.codec.format import FORMAT_VERSION
from pipeline.core import storage
from pipeline.ledger.completion import read_record

if TYPE_CHECKING:
    from pipeline.ledger.shard import Shard

MANIFEST = "manifest.json"
FAILURES = "failures.json"


def write_manifest(output: str, shards: list[Shard], job_fingerprint: str, extra: dict) -> dict:
    entries = []
    records = [read_record(output, s.name) for s in shards]
    for s, r in zip(shards, records, strict=True):
        entries.append(
            {
                "name": s.name,
                "source": s.source,
                "rows": r.rows if r else None,
                "bytes": r.bytes if r else None,
                "sha256": r.sha256 if r else None,
            }
        )
    manifest = {
        "format_version": FORMAT_VERSION,
        "job_fingerprint": job_fingerprint,
        "shards": entries,
        "rows": sum(r.rows for r in records if r),
        "bytes": sum(r.bytes for r in records if r),
        **extra,
    }
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest


def write_failures(output: str, failures: list[dict]) -> None:
    uri = storage.join(output, FAILURES)
    if failures:
        storage.write_bytes(uri, json.dumps(failures, indent=2).encode())
    else:
        storage.remove(uri)
