"""Whose files an output folder holds, and which of them a decode may remove.

A job removes only what it can prove is its own: named by its own records, of its own kind,
inside its own folder after resolving the path (DESIGN: "What a job may remove").

    output folder
      job.json, *.vz.parquet, an encode manifest  -> an encode archive: decode never touches it
      _done/ records naming files of another archive, or a manifest saying so
                                                   -> another archive's decode: refused unless
                                                      --overwrite, then only its files go
      _done/ records of this archive's decode      -> stale ones replaced (a re-encode, a format
                                                      change), the rest resumed

Every path a record or an index names is resolved and checked to lie inside the folder before
anything is removed; one that does not stops the job and removes nothing.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor

from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.names import ARCHIVE_SUFFIX
from pipeline.data.outputs import output_files
from pipeline.ledger.completion import DONE, CompletionRecord, done_uri, read_record
from pipeline.ledger.job import JOB
from pipeline.ledger.manifest import MANIFEST, MANIFEST_DIR
from pipeline.ledger.shard import Entry


def _manifest(output: str) -> dict:
    try:
        data = json.loads(storage.read_bytes(storage.join(output, MANIFEST)))
    except FileNotFoundError:
        return {}
    except ValueError:
        return {"kind": "unreadable"}
    return data if isinstance(data, dict) else {"kind": "unreadable"}


def encode_evidence(output: str) -> str | None:
    """Why ``output`` holds an encode archive (None: it does not)."""
    names = storage.listdir(output)
    if JOB in names:
        return JOB
    archive_files = [n for n in names if n.endswith(ARCHIVE_SUFFIX)]
    if archive_files:
        return archive_files[0]
    if _manifest(output).get("kind") == "encode":
        return MANIFEST
    if any(n.endswith(ARCHIVE_SUFFIX + ".json") for n in storage.listdir(storage.join(output, DONE))):
        return f"{DONE}/ records of archive files"
    return None


Records = list[tuple[str, CompletionRecord | None]]  # (output name, its record if readable)


def read_records(
    output: str, readers: int = 16, known: dict[str, Entry] | None = None, job_fingerprint: str = ""
) -> Records:
    """Every completion record in ``output``, read in parallel (one listing, one GET each),
    except those of files that ``known`` (what job ``job_fingerprint``'s manifest and progress
    tables list) already describes: a re-run reads none of what it finished before."""
    names = [n[: -len(".json")] for n in storage.listdir(storage.join(output, DONE)) if n.endswith(".json")]
    known = known or {}
    unread = [n for n in names if n not in known]
    with ThreadPoolExecutor(max_workers=max(1, min(readers, len(unread)))) as pool:
        read = dict(zip(unread, pool.map(lambda n: read_record(output, n), unread), strict=True))
    told = {n: CompletionRecord(job_fingerprint, n, e.source, *e.recorded) for n, e in known.items()}
    return [(n, read[n] if n in read else told[n]) for n in names]


def _of_this_archive(source: str, archive_dirs: set[str]) -> bool:
    folder = posixpath.dirname(source.rstrip("/"))
    return any(storage.within(folder, d) and storage.within(d, folder) for d in archive_dirs)


def check_decode_output(output: str, archive_sources: list[str], overwrite: bool, records: Records) -> bool:
    """Refuse an output folder that holds an encode archive (always) or the decode of another
    archive (unless ``overwrite``). Returns whether the folder holds another archive's decode
    that ``overwrite`` lets this job replace."""
    evidence = encode_evidence(output)
    if evidence is not None:
        raise ConfigError(
            f"--output {output} holds an encode archive ({evidence}); decode never removes an "
            "archive: choose another --output"
        )
    dirs = {posixpath.dirname(s) for s in archive_sources}
    # the records say whose decode this is: each names the archive file it was made from (an
    # absolute URI, unlike the manifest's "archive", which is the path as typed)
    foreign = [r.source for _, r in records if r is not None and not _of_this_archive(r.source, dirs)]
    if foreign and not overwrite:
        raise ConfigError(
            f"--output {output} holds the decode of another archive ({foreign[0]}); pass "
            "--overwrite to replace it (only that decode's files are removed) or choose another --output"
        )
    return bool(foreign)


def clear_stale_outputs(
    output: str, keep: set[str], job_fp: str, overwrite: bool, records: Records | None = None
) -> int:
    """Remove the outputs (and records) of an earlier decode that this one does not keep: all
    of them with ``overwrite``, else those made from other archive contents or of files the
    archive no longer holds. Every file is checked before the first is removed. Returns how
    many outputs went."""
    stale = [
        name
        for name, record in (read_records(output) if records is None else records)
        if overwrite or record is None or record.job_fingerprint != job_fp or name not in keep
    ]
    doomed: list[str] = []
    for name in stale:
        if name != posixpath.basename(name) or name in ("", ".", ".."):
            raise InputError(done_uri(output, name), "not a file name of this folder; nothing was removed")
        doomed += output_files(output, name)
        doomed.append(done_uri(output, name))
    for uri in doomed:
        if not storage.within(uri, output) or storage.within(output, uri):
            raise InputError(uri, f"lies outside --output {output}; nothing was removed")
    for uri in doomed:
        storage.remove(uri)
    if stale:
        storage.remove(storage.join(output, MANIFEST))
        storage.remove(storage.join(output, MANIFEST_DIR), recursive=True)
    return len(stale)
