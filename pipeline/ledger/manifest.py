"""The archive's table of contents, written once every shard is complete.

    _manifest/files.parquet
                       one row per file: name, source, rows, bytes, sha256 (null where a file
                       is missing), streamed in row groups; DuckDB and pyarrow read it (in a
                       folder of its own, so no glob of the output's ``*.parquet`` takes it
                       for data, and pyarrow's datasets and Spark skip ``_`` folders)
    manifest.json      the summary, written last: format and manifest versions, the job, the
                       totals, the table's name, size and sha256 (manifests before version 2
                       listed the files here, as "shards"; they are still read)
    _manifest/progress/<job>-<id>.parquet
                       the driver's journal while a job runs: what it committed, a table per
                       4,096 files (or a minute), so a re-run after a crash or failed shards
                       judges the done part from a few tables, not a GET per record; removed
                       once the manifest is written

Built from what the driver holds (each shard's committed record, from this run's results or
from the listing that found it complete), not by reading every record again.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.codec.format import FORMAT_VERSION
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.shard import Entry, Recorded

if TYPE_CHECKING:
    from pipeline.ledger.shard import Shard

MANIFEST = "manifest.json"
MANIFEST_DIR = "_manifest"
MANIFEST_TABLE = f"{MANIFEST_DIR}/files.parquet"
PROGRESS_DIR = f"{MANIFEST_DIR}/progress"
PROGRESS_EVERY = 4096  # files a progress table holds at most
PROGRESS_SECONDS = 60.0  # ... or what a minute committed, whichever comes first
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
    storage.remove(storage.join(output, PROGRESS_DIR), recursive=True)  # the manifest says it all now
    return manifest


class Progress:
    """The driver's journal of what this run committed: a small table flushed every
    ``PROGRESS_EVERY`` files or ``PROGRESS_SECONDS``, and at the end of the dispatch (even one
    with failed shards, which writes no manifest). Each table is written whole or not at all
    and names the job, so a re-run reads what another job wrote as nothing."""

    def __init__(self, output: str, job_fingerprint: str) -> None:
        self.output, self.job_fingerprint = output, job_fingerprint
        self.pending: list[tuple[str, str, Recorded, str]] = []
        self.since = time.monotonic()

    def add(self, name: str, source: str, recorded: Recorded, identity: str) -> None:
        self.pending.append((name, source, recorded, identity))
        if len(self.pending) >= PROGRESS_EVERY or time.monotonic() - self.since > PROGRESS_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.pending:
            return
        names, sources, recorded, identities = zip(*self.pending, strict=True)
        table = pa.table(
            [
                pa.array(names, pa.string()),
                pa.array(sources, pa.string()),
                pa.array([r[0] for r in recorded], pa.int64()),
                pa.array([r[1] for r in recorded], pa.int64()),
                pa.array([r[2] for r in recorded], pa.string()),
                pa.array(identities, pa.string()),
            ],
            schema=SCHEMA.with_metadata({"job_fingerprint": self.job_fingerprint}),
        )
        # named by the job, then the time (a listing sorts them oldest first)
        name = f"{self.job_fingerprint[:16]}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        uri = storage.join(self.output, PROGRESS_DIR, name)
        with storage.atomic_write(uri) as f:
            pq.write_table(table, f, compression="zstd")
        self.pending = []


def _progress(folder: str, job_fingerprint: str, readers: int = 16) -> Iterator[pa.Table]:
    """This job's progress tables (read in parallel); one that cannot be read is skipped (its
    shards' records are read instead)."""
    prefix = job_fingerprint[:16] + "-"
    uris = [
        storage.join(folder, PROGRESS_DIR, n)
        for n in storage.listdir(storage.join(folder, PROGRESS_DIR))
        if n.startswith(prefix) and n.endswith(".parquet")
    ]

    def read(uri: str) -> pa.Table | None:
        try:
            table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        except (OSError, ValueError, pa.ArrowException):
            return None
        meta = table.schema.metadata or {}
        return table if meta.get(b"job_fingerprint") == job_fingerprint.encode() else None

    with ThreadPoolExecutor(max_workers=max(1, min(readers, len(uris)))) as pool:
        yield from (t for t in pool.map(read, uris) if t is not None)


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
    out: dict[str, Recorded | None] = {}
    for part in _row_groups(_checked_table(folder, table), ("name", "rows", "bytes", "sha256")):
        cols = [c.to_pylist() for c in part.columns]
        out.update((str(n), _recorded(r, b, s)) for n, r, b, s in zip(*cols, strict=True))
    return out


def _checked_table(folder: str, table: dict) -> pq.ParquetFile:
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
    return pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)


def _row_groups(table: pq.ParquetFile | pa.Table, columns: tuple[str, ...]) -> Iterator[pa.Table]:
    """``columns`` of a table a row group at a time: a million files' manifest is read in
    pieces of ``ROW_GROUP`` rows (``pq.read_table`` of 100,000 files' took 52 MB of memory
    beyond the table's 16 MB; this, 19 MB)."""
    if isinstance(table, pa.Table):
        yield from (pa.Table.from_batches([b]) for b in table.select(columns).to_batches(ROW_GROUP))
        return
    for i in range(table.num_row_groups):
        yield table.read_row_group(i, columns=list(columns), use_threads=False)


def this_jobs_rows(folder: str, job_fingerprint: str) -> Iterator[tuple[str, Entry]]:
    """What this job's manifest (version 2) and its progress tables say of each file they
    list (its source, what was committed and the input's identity then), the manifest first
    and the progress tables of runs since, oldest first, so the last word of a name stands;
    a row group at a time, so a million files are never all Python objects at once. Nothing
    where there are none, or they cannot be read (a re-run then reads the completion records
    instead)."""
    tables: list[pq.ParquetFile] = []
    try:
        data = json.loads(storage.read_bytes(storage.join(folder, MANIFEST)))
        if data.get("job_fingerprint") == job_fingerprint and isinstance(data.get("table"), dict):
            tables.append(_checked_table(folder, data["table"]))
    except (FileNotFoundError, ValueError, InputError, KeyError, TypeError, AttributeError):
        pass
    names = ("name", "source", "rows", "bytes", "sha256", "input_identity")
    for table in itertools.chain(tables, _progress(folder, job_fingerprint)):
        if "input_identity" not in table.schema.names:
            continue
        for part in _row_groups(table, names):
            cols = [c.to_pylist() for c in part.columns]
            for name, source, rows, size, sha, ident in zip(*cols, strict=True):
                rec = _recorded(rows, size, sha)
                if rec is not None and source is not None:
                    yield str(name), Entry(str(source), rec, str(ident or ""))


def this_jobs_files(folder: str, job_fingerprint: str) -> dict[str, Entry]:
    """``this_jobs_rows`` as a mapping: each file's last word."""
    return dict(this_jobs_rows(folder, job_fingerprint))


def write_failures(output: str, failures: list[dict]) -> None:
    uri = storage.join(output, FAILURES)
    if failures:
        storage.write_bytes(uri, json.dumps(failures, indent=2).encode())
    else:
        storage.remove(uri)
