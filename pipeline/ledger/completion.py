"""The shard lifecycle, in one place (and without torch, so the driver can import it).

    run_shard(output, shard, name, job_fingerprint, body)
      timer -> atomic write of <output>/<name> through a storage.HashingWriter -> body(f, uri)
        -> InputError?  a failed ShardResult (a value, not a crash; nothing committed)
        -> commit -> _done/<name>.json (the CompletionRecord, written last) -> log line
    is_complete(output, name, job_fingerprint)
      the record exists, names this job, and the output it describes is there in full

A relaunch skips what ``is_complete`` says is done, as datatrove's executor does with its
completion files (``is_rank_completed`` / ``mark_rank_as_completed``).
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.manifest import this_jobs_rows

if TYPE_CHECKING:
    from pipeline.ledger.shard import Entry, Recorded, Shard

log = logging.getLogger(__name__)
DONE = "_done"
READ_CHUNK = 4096  # completion records read (in parallel) and judged at a time


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What a worker reports for one shard: a bad shard is a value, not a crash."""

    name: str
    source: str
    ok: bool
    rows: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    clipped: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0  # of ``seconds``, in the model (encoder or decoder) calls
    error: str | None = None
    retryable: bool = False
    attempts: int = 1
    recorded: Recorded | None = None  # what was committed (rows, bytes, sha256), for the manifest
    input_identity: str = ""  # the input's identity it was made from (Shard.identity)


def failed(name: str, source: str, err: InputError, start: float) -> ShardResult:
    """A shard that failed with ``err``, logged with its name."""
    log.warning("shard %s failed: %s", name, err)
    return ShardResult(
        name,
        source,
        ok=False,
        error=str(err),
        retryable=err.retryable,
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class CompletionRecord:
    """``_done/<name>.json``: the progress record and the resume marker of one output file."""

    job_fingerprint: str
    name: str
    source: str
    rows: int
    bytes: int
    sha256: str
    input_bytes: int = 0
    clipped: int = 0
    seconds: float = 0.0
    input_identity: str = ""  # the input's Shard.identity when it was read ("": an older record)

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: builtins.bytes) -> CompletionRecord | None:
        """The record, or None for one that is not JSON or lacks a field (a partial write by
        an older version, a hand edit): such a shard is simply redone."""
        try:
            raw = json.loads(data)
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in names})
        except (ValueError, TypeError, AttributeError):
            return None


def fan_depth(names: Iterable[str]) -> int:
    """How many sub-folders down the named outputs lie (``--fan-out``: 1)."""
    return max((n.count("/") for n in names), default=0)


def done_uri(output: str, name: str) -> str:
    return storage.join(output, DONE, name + ".json")


def read_record(output: str, name: str) -> CompletionRecord | None:
    try:
        return CompletionRecord.from_json(storage.read_bytes(done_uri(output, name)))
    except FileNotFoundError:
        return None


def temp_tag(job_fingerprint: str) -> str:
    """What marks a job's temporary files as its own."""
    return job_fingerprint[:16]


def write_record(output: str, record: CompletionRecord) -> None:
    storage.write_bytes(done_uri(output, record.name), record.to_json(), temp_tag(record.job_fingerprint))


def is_complete(output: str, name: str, job_fingerprint: str, identity: str = "") -> bool:
    """Done by this job: the record names ``job_fingerprint`` (and, given an input
    ``identity``, the same input) and the output file it describes exists with the recorded
    size."""
    return shard_state(output, name, job_fingerprint, identity) == "done"


def input_changed(record: CompletionRecord, identity: str) -> bool:
    """Whether the input a record was made from differs from the one listed now (an older
    record, without an identity, is judged by its input bytes)."""
    if not identity:
        return False
    if record.input_identity:
        return record.input_identity != identity
    return record.input_bytes != int(identity.split(":", 1)[0])


def _judge(record: CompletionRecord | None, size: int | None, job_fingerprint: str, identity: str) -> str:
    """A shard's state from its record and its output's size (None: no output)."""
    if record is None or record.job_fingerprint != job_fingerprint or size != record.bytes:
        return "todo"
    return "changed" if input_changed(record, identity) else "done"


def shard_state(output: str, name: str, job_fingerprint: str, identity: str = "") -> str:
    """ "done"; "changed": done by this job, from an input that has changed since; or "todo"."""
    record = read_record(output, name)
    if record is None:
        return "todo"
    try:
        size: int | None = storage.size(storage.join(output, name))
    except FileNotFoundError:
        size = None
    return _judge(record, size, job_fingerprint, identity)


def shard_states(
    output: str,
    shards: list[Shard],
    job_fingerprint: str,
    readers: int = 16,
    found: MutableMapping[str, Recorded] | None = None,
    records: dict[str, CompletionRecord | None] | None = None,
    known: dict[str, Entry] | None = None,
) -> dict[str, str]:
    """``shard_state`` of every shard, from one listing of ``_done/`` and one of the output
    folder (names and sizes), this job's manifest and progress tables where there are some
    (what they list with the size listed is judged by them; ``known``: as the caller read
    them), then the other records that exist, read in parallel: no request per shard to learn
    that something is missing, none to learn an output's size, and none at all for what a
    re-run of a finished or interrupted job finds done. ``found`` gets what was committed of
    every shard that is done, for the manifest. ``records``: the records, where the caller has
    read them already (a decode, for its ownership check)."""
    depth = fan_depth(s.name for s in shards)
    sizes = storage.file_sizes(output, depth)
    there = {s.name: s for s in shards if s.name in sizes}  # keyed by the plan's own strings
    listed: dict[str, Shard] = {}  # a record and an output are there: to be judged
    for n in storage.iter_names(storage.join(output, DONE), depth):  # streamed, not held
        if n.endswith(".json") and (s := there.get(n[: -len(".json")])) is not None:
            listed[s.name] = s
    del there
    states = {s.name: "todo" for s in shards if s.name not in listed}
    keep = found if found is not None else {}
    # streamed, not held: the job's tables as rows, the newest word of a name standing
    rows = this_jobs_rows(output, job_fingerprint) if known is None else known.items()
    for name, (_, rec, identity) in rows:
        if (shard := listed.get(name)) is None:
            continue
        name = shard.name  # the plan's string, not the table's copy, is kept
        if rec[1] == sizes[name]:
            states[name] = "changed" if shard.identity and identity != shard.identity else "done"
            if states[name] == "done":
                keep[name] = rec
                continue
        else:
            states.pop(name, None)  # listed with another size: its record decides
        keep.pop(name, None)
    unread = [s for s in listed.values() if s.name not in states]
    del listed
    with ThreadPoolExecutor(max_workers=max(1, min(readers, len(unread)))) as pool:
        for start in range(0, len(unread), READ_CHUNK):  # records held a chunk at a time
            part = unread[start : start + READ_CHUNK]
            if records is not None:
                read = [records.get(s.name) for s in part]
            else:
                read = list(pool.map(lambda s: read_record(output, s.name), part))
            for s, r in zip(part, read, strict=True):
                states[s.name] = _judge(r, sizes.get(s.name), job_fingerprint, s.identity)
                if r is not None and states[s.name] == "done":
                    keep[s.name] = (r.rows, r.bytes, r.sha256)
    return states


class Stopwatch:
    """Seconds spent inside ``timing()`` blocks since the last ``reset()``: a worker's model
    time for the shard at hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def reset(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


@dataclass(frozen=True)
class Written:
    """What a worker's body wrote into one output file."""

    rows: int
    clipped: int = 0
    extra_bytes: int = 0  # written beside the output file (a decode's images): counted, not hashed


Body = Callable[[storage.HashingWriter, str], Written]


def run_shard(
    output: str, shard: Shard, name: str, job_fingerprint: str, body: Body, clock: Stopwatch | None = None
) -> ShardResult:
    """Write ``<output>/<name>`` from ``shard`` with ``body(f, uri)``: the skeleton every
    worker shares. An empty result is an error, so no empty file is ever committed."""
    start = time.perf_counter()
    if clock is not None:
        clock.reset()
    uri = storage.join(output, name)
    try:
        with storage.atomic_write(uri, temp_tag(job_fingerprint)) as raw:
            f = storage.HashingWriter(raw)
            written = body(f, uri)
            if written.rows == 0:
                raise InputError(shard.source, "shard holds no rows")
    except InputError as err:
        return failed(name, shard.source, err, start)
    seconds = time.perf_counter() - start
    record = CompletionRecord(
        job_fingerprint=job_fingerprint,
        name=name,
        source=shard.source,
        rows=written.rows,
        bytes=f.bytes,
        sha256=f.sha256.hexdigest(),
        input_bytes=shard.input_bytes(),
        clipped=written.clipped,
        seconds=round(seconds, 3),
        input_identity=shard.identity,
    )
    write_record(output, record)
    log.info("shard %s: %d rows, %d bytes, %.2f s", name, written.rows, f.bytes, seconds)
    return ShardResult(
        name,
        shard.source,
        ok=True,
        rows=written.rows,
        input_bytes=record.input_bytes,
        output_bytes=f.bytes + written.extra_bytes,
        clipped=written.clipped,
        seconds=seconds,
        model_seconds=clock.seconds if clock is not None else 0.0,
        recorded=(record.rows, record.bytes, record.sha256),
        input_identity=shard.identity,
    )
