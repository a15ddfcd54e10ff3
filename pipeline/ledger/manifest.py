"""The archive's table of contents, written once every shard is complete.

    _manifest/files.parquet
                       one row per file: name, source, rows, bytes, sha256 (null where a file
                       is missing), streamed in row groups; DuckDB and pyarrow read it (in a
                       folder of its own, so no glob of the output's ``*.parquet`` takes it
                       for data, and pyarrow's datasets and Spark skip ``_`` folders)
    manifest.json      the summary, written last: format and manifest versions, the job, the
                       totals, the table's name, size and sha256 (manifests before version 2
                       listed the files here, as "shards"; they are still read)

Built from what the driver holds (each shard's committed record, from this run's results or
from the listing that found it complete), not by reading every record again.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.codec.format import FORMAT_VERSION
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.shard import Recorded

if TYPE_CHECKING:
    from pipeline.ledger.shard import Shard

MANIFEST = "manifest.json"
MANIFEST_DIR = "_manifest"
MANIFEST_TABLE = f"{MANIFEST_DIR}/files.parquet"
FAILURES = "failures.json"
MANIFEST_VERSION = 2  # 1: every file listed in manifest.json; 2: in _manifest/
ROW_GROUP = 8192
SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("source", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("input_identity", pa.string()),
    ]
)


def _groups(shards: list[Shard], recorded: Mapping[str, Recorded]) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(shards), ROW_GROUP):
        part = shards[start : start + ROW_GROUP]
        got = [recorded.get(s.name) for s in part]
        yield pa.record_batch(
            [
                pa.array([s.name for s in part], pa.string()),
                pa.array([s.source for s in part], pa.string()),
                pa.array([r[0] if r else None for r in got], pa.int64()),
                pa.array([r[1] if r else None for r in got], pa.int64()),
                pa.array([r[2] if r else None for r in got], pa.string()),
                pa.array([s.identity for s in part], pa.string()),
            ],
            schema=SCHEMA,
        )


def write_manifest(
    output: str, shards: list[Shard], job_fingerprint: str, extra: dict, recorded: Mapping[str, Recorded]
) -> dict:
    """The manifest of ``shards``, each as ``recorded`` (name -> rows, bytes, sha256) says it
    was committed; the summary is returned."""
    with storage.atomic_write(storage.join(output, MANIFEST_TABLE)) as raw:
        f = storage.HashingWriter(raw)  # streamed: one row group in memory at a time
        with pq.ParquetWriter(f, SCHEMA, compression="zstd") as w:
            for batch in _groups(shards, recorded):
                w.write_batch(batch, row_group_size=ROW_GROUP)
    rows = size = missing = 0
    for s in shards:
        r = recorded.get(s.name)
        if r is None:
            missing += 1
        else:
            rows, size = rows + r[0], size + r[1]
    manifest = {
        "format_version": FORMAT_VERSION,
        "manifest_version": MANIFEST_VERSION,
        "job_fingerprint": job_fingerprint,
        "files": len(shards),
        "missing": missing,
        "rows": rows,
        "bytes": size,
        "table": {"name": MANIFEST_TABLE, "bytes": f.bytes, "sha256": f.sha256.hexdigest()},
        **extra,
    }
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return manifest


def read_manifest(folder: str) -> dict[str, Recorded | None] | None:
    """name -> (rows, bytes, sha256) of every file the manifest lists (None for one it lists
    as missing); None where there is no manifest. Version 2 reads the table, checked against
    the sha256 the summary gives it; version 1 its "shards" list."""
    uri = storage.join(folder, MANIFEST)
    try:
        data = json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise InputError(uri, f"not a readable manifest ({err})") from err
    try:
        if isinstance(data.get("table"), dict):
            return _read_table(folder, data["table"])
        return {str(e["name"]): _recorded(e["rows"], e["bytes"], e["sha256"]) for e in data["shards"]}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(uri, f"not a readable manifest ({err})") from err


def _recorded(rows: object, size: object, sha: object) -> Recorded | None:
    if rows is None or size is None or sha is None:
        return None
    return int(rows), int(size), str(sha)  # type: ignore[call-overload]


def _read_table(folder: str, table: dict) -> dict[str, Recorded | None]:
    t = _checked_table(folder, table)
    cols = [t.column(n).to_pylist() for n in ("name", "rows", "bytes", "sha256")]
    return {str(n): _recorded(r, b, s) for n, r, b, s in zip(*cols, strict=True)}


def _checked_table(folder: str, table: dict) -> pa.Table:
    """The manifest's table, once its size and sha256 are those the summary gives."""
    uri = storage.join(folder, MANIFEST_TABLE)
    if table["name"] != MANIFEST_TABLE:
        raise InputError(uri, f"the manifest names a table other than {MANIFEST_TABLE}: {table['name']!r}")
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as err:
        raise InputError(uri, "the manifest's table is missing") from err
    if len(data) != table["bytes"] or hashlib.sha256(data).hexdigest() != table["sha256"]:
        raise InputError(uri, "sha256 does not match the manifest's: the table changed after it was written")
    return pq.read_table(io.BytesIO(data))


def this_jobs_files(folder: str, job_fingerprint: str) -> dict[str, tuple[Recorded, str]]:
    """What a manifest of this job (version 2) says of each file it lists: what was committed
    and the input's identity then; nothing where there is no such manifest, or it cannot be
    read (a re-run then reads the completion records instead)."""
    try:
        data = json.loads(storage.read_bytes(storage.join(folder, MANIFEST)))
        if data.get("job_fingerprint") != job_fingerprint or not isinstance(data.get("table"), dict):
            return {}
        table = _checked_table(folder, data["table"])
    except (FileNotFoundError, ValueError, InputError, KeyError, TypeError, AttributeError):
        return {}
    if "input_identity" not in table.column_names:
        return {}
    cols = [table.column(n).to_pylist() for n in ("name", "rows", "bytes", "sha256", "input_identity")]
    out = {}
    for name, rows, size, sha, ident in zip(*cols, strict=True):
        rec = _recorded(rows, size, sha)
        if rec is not None and ident:
            out[str(name)] = (rec, str(ident))
    return out


def write_failures(output: str, failures: list[dict]) -> None:
    uri = storage.join(output, FAILURES)
    if failures:
        storage.write_bytes(uri, json.dumps(failures, indent=2).encode())
    else:
        storage.remove(uri)
