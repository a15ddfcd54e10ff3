"""The deterministic shard plan and the job's fingerprint.

One input file is one shard; its output name is derived from its path relative to the input
root, so a re-run, a retry and a resume all land on the same name:

    data/photos/train/train-00003.parquet  ->  train-00003.parquet.vz.parquet
    data/x/a/b.npy (root data/x)           ->  a__b.npy.vz.parquet

Image files are the exception: sorted by path, they are grouped ``images_per_shard`` at a
time into shards ``images-00000.vz.parquet``, ``images-00001.vz.parquet``, ...

A shard is complete when ``_done/<name>.json`` exists and names the same job fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

from pipeline import storage
from pipeline.errors import ConfigError
from pipeline.readers import format_of, list_sources

SUFFIX = ".vz.parquet"
DONE = "_done"


@dataclass(frozen=True)
class Shard:
    index: int
    source: str      # URI of the input file
    relpath: str     # path relative to the input root: the key prefix
    name: str        # output file name inside the archive folder
    members: tuple[str, ...] = ()  # image files of a group (then ``source`` is their folder)

    @property
    def files(self) -> tuple[str, ...]:
        return self.members or (self.source,)

    def input_bytes(self) -> int:
        return sum(storage.size(f) for f in self.files)


def _root(uri: str, files: list[str]) -> str:
    """The folder keys and output names are relative to: the input folder itself, else the
    folder of the input file, else (a glob) the deepest folder holding every match."""
    if len(files) == 1 and files[0].rstrip("/") == uri.rstrip("/"):
        return posixpath.dirname(files[0].split("://", 1)[-1])
    if not any(ch in uri for ch in "*?["):
        return storage.filesystem(uri)[1].rstrip("/")
    return posixpath.commonpath([posixpath.dirname(f.split("://", 1)[-1]) for f in files])


def plan_shards(input_uri: str, images_per_shard: int = 1000) -> list[Shard]:
    if images_per_shard < 1:
        raise ConfigError(f"images_per_shard must be positive, got {images_per_shard}")
    files = list_sources(input_uri)
    root = _root(input_uri, files)
    if format_of(files[0]) == "images":
        proto = files[0].split("://", 1)[0] + "://" if "://" in files[0] else ""
        groups = [tuple(files[i: i + images_per_shard])
                  for i in range(0, len(files), images_per_shard)]
        return [Shard(index=i, source=proto + root, relpath=f"images-{i:05d}",
                      name=f"images-{i:05d}{SUFFIX}", members=g) for i, g in enumerate(groups)]
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
