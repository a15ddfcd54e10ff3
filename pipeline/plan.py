"""The deterministic shard plan and the job's fingerprint.

One input file is one shard; its output name is derived from its path relative to the input
root, so a re-run, a retry and a resume all land on the same name:

    data/photos/train/train-00003.parquet  ->  train-00003.parquet.vz.parquet
    data/x/a/b.npy (root data/x)           ->  a__b.npy.vz.parquet

A shard is complete when ``_done/<name>.json`` exists and names the same job fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

from pipeline import storage
from pipeline.readers import list_sources

SUFFIX = ".vz.parquet"
DONE = "_done"


@dataclass(frozen=True)
class Shard:
    index: int
    source: str      # URI of the input file
    relpath: str     # path relative to the input root: the key prefix
    name: str        # output file name inside the archive folder


def _root(uri: str, files: list[str]) -> str:
    if len(files) == 1 and files[0].rstrip("/") == uri.rstrip("/"):
        return posixpath.dirname(files[0])
    return posixpath.commonpath([posixpath.dirname(f.split("://", 1)[-1]) for f in files])


def plan_shards(input_uri: str) -> list[Shard]:
    files = list_sources(input_uri)
    root = _root(input_uri, files)
    shards = []
    for i, f in enumerate(files):
        rel = posixpath.relpath(f.split("://", 1)[-1], root)
        shards.append(Shard(index=i, source=f, relpath=rel, name=rel.replace("/", "__") + SUFFIX))
    return shards


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def done_uri(output: str, name: str) -> str:
    return storage.join(output, DONE, name + ".json")


def read_done(output: str, name: str) -> dict | None:
    try:
        record = json.loads(storage.read_bytes(done_uri(output, name)))
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_complete(output: str, shard: Shard, job_fingerprint: str) -> bool:
    record = read_done(output, shard.name)
    return bool(record) and record.get("job_fingerprint") == job_fingerprint \
        and storage.exists(storage.join(output, shard.name))
