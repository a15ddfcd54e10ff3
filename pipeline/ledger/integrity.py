"""What decode, inspect and verify trust about an archive, checked against what encode
recorded when it committed each file.

    archive folder -> its manifest (or, before it exists, the _done/ records)
      -> every listed file present, with its recorded size; every archive file listed
      -> Listed(uri, rows, bytes, sha256) per file, for the reader to check the file's
         sha256 and row count against (read_verified) before it trusts the contents

Together with the Parquet page CRCs, the per-row CRC-32 of the codes and the footer's own
checksum (pipeline.codec.format), every byte decode trusts is covered by a checksum.
"""

from __future__ import annotations

import hashlib
import posixpath

from pipeline.codec.format import archive_files, read_meta_and_rows
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.completion import read_record
from pipeline.ledger.manifest import read_manifest
from pipeline.ledger.shard import Listed, Recorded

CHUNK = 1 << 20
CHANGED = "sha256 does not match the archive's record: the file changed after it was written"


def _folder_of(uri: str, files: list[str]) -> str:
    """The archive folder: the input itself, or the folder of the file (or glob) named."""
    return uri if not storage.is_glob(uri) and storage.is_dir(uri) else posixpath.dirname(files[0]) or "."


def listed_files(archive: str) -> list[Listed]:
    """Every archive file found, and (for a whole archive folder) every file its manifest lists,
    with what the manifest (or, while the archive is being written, the completion records)
    recorded of it. Nothing is judged here: each file's ``problem()`` fails its own shard."""
    files = archive_files(archive)
    folder = _folder_of(archive, files)
    # a file's name is its path in the folder: under a sub-folder with --fan-out
    names = storage.names_in(files, folder)
    entries: dict[str, Recorded | None] | None = read_manifest(folder)
    if entries is None:
        records = (read_record(folder, n) for n in names)
        entries = {r.name: (r.rows, r.bytes, r.sha256) for r in records if r is not None}
    found = dict(zip(names, files, strict=True))
    if not storage.is_glob(archive) and storage.within(folder, archive):  # the whole folder
        found.update({n: storage.join(folder, n) for n in entries if n not in found})
    return [Listed(found[n], n, *(entries.get(n) or (None, None, None))) for n in sorted(found)]


def sha256_of(uri: str) -> str:
    h = hashlib.sha256()
    with storage.open_read(uri) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_verified(f: Listed) -> bytes:
    """An archive file's bytes, read once and checked against what its records say (present,
    listed, size, sha256) before anyone uses them: what a reader hands out is what encode
    wrote. Raises ``InputError`` naming the file."""
    if f.sha256 is None:  # no record covers it (what problem() says, without a request)
        raise InputError(f.uri, str(f.problem(size=False)))
    try:
        data = storage.read_bytes(f.uri, f.bytes)
    except FileNotFoundError as err:
        raise InputError(f.uri, "listed in the archive's manifest but missing") from err
    if len(data) != f.bytes or hashlib.sha256(data).hexdigest() != f.sha256:
        raise InputError(f.uri, CHANGED)
    return data


def check_archive(uri: str) -> list[str]:
    """Every file of an archive checked against its manifest (or completion records): presence,
    size, sha256 and row count. Returns the problems, one line each (none: all is well)."""
    problems = []
    for f in listed_files(uri):
        problem = f.problem()
        if problem is None and f.sha256 is not None:
            if sha256_of(f.uri) != f.sha256:
                problem = CHANGED
            elif read_meta_and_rows(f.uri)[1] != f.rows:
                problem = f"row count differs from the archive's record ({f.rows})"
        if problem:
            problems.append(f"{f.uri}: {problem}")
    return problems
