"""The one door to fsspec: every byte vaezip reads or writes goes through here.

URIs are anything fsspec understands (a local path, ``file://``, ``memory://``, ``s3://``,
``gs://``). Local paths stay plain paths in everything we return, so logs and manifests read
naturally.

Writes are atomic: a file is written under a temporary name beside its final one and then
renamed, so nobody sees a half-written file under its final name. On object stores (S3, GCS)
an object appears only when its upload completes (one PUT, or a multipart upload completed on
close), so we write the final key directly and abort the upload on an error.

Object-store listings are not cached: workers in other processes write the files a driver
lists next.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem


class Sink(Protocol):
    """What a writer needs of its output: an open file, or a wrapper around one (the
    hashing writer of ``pipeline.ledger.completion``)."""

    def write(self, data: bytes, /) -> int: ...

    def tell(self) -> int: ...

    def flush(self) -> None: ...


_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs"}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    protocol, _ = fsspec.core.split_protocol(uri)
    options = {"use_listings_cache": False} if protocol in _OBJECT_STORES else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return fs, path


def _unstrip(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def join(base: str, *names: str) -> str:
    if "://" in base:
        proto, rest = base.split("://", 1)
        return f"{proto}://{posixpath.join(rest, *names)}"
    return posixpath.join(base, *names)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def names_in(uris: list[str], folder: str) -> list[str]:
    """Each file's path relative to ``folder`` (its name alone where it lies elsewhere)."""
    fs, base = filesystem(folder)
    base = base.rstrip("/") + "/"
    paths = (fs._strip_protocol(u) for u in uris)
    return [p[len(base) :] if p.startswith(base) else posixpath.basename(p) for p in paths]


def _canonical(uri: str) -> tuple[str, str]:
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        return "file", os.path.realpath(path)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    return protocol, posixpath.normpath("/" + path.rstrip("/"))


def within(uri: str, folder: str) -> bool:
    """Whether ``uri`` is ``folder`` itself or lies inside it (symlinks resolved on a disk)."""
    (p1, a), (p2, b) = _canonical(uri), _canonical(folder)
    return p1 == p2 and (a == b or a.startswith(b.rstrip("/") + "/"))


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def is_process_local(uri: str) -> bool:
    """A URI whose contents live in this process alone (``memory://``)."""
    return "memory" in _protocols(filesystem(uri)[0])


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    return bool(_protocols(fs) & _OBJECT_STORES)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


# s3fs asks an object's size (a HEAD) before reading it, to fetch a large one in parallel parts;
# below this size, or where the size is not known (records, JSON), one GET does it
ONE_REQUEST = 32 << 20


def read_bytes(uri: str, size: int | None = None) -> bytes:
    """A whole file; ``size`` (where the caller knows it) picks how an object store is read."""
    fs, path = filesystem(uri)
    if type(fs).__name__ == "S3FileSystem" and (size is None or size <= ONE_REQUEST):
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


def open_read(uri: str, size: int | None = None) -> IO[bytes]:
    """A file to read in parts; ``size`` (its bytes as listed, where the caller knows them)
    spares an object store the HEAD it would send to learn it: a file of one read block or
    less is read whole at once (one GET, the block the reader was going to read anyway), so a
    missing or forbidden file fails here, not inside a parser that would call it corrupt
    (zipfile turns any error of its reads into "not a zip file"), and a parser seeking before
    its start gets what it gets from a disk file, not fsspec's ValueError. A file that changed
    since it was listed is read as it is now: its identity says it is another, and a re-run
    reads it again."""
    fs, path = filesystem(uri)
    if size is None or type(fs).__name__ != "S3FileSystem" or size > fs.default_block_size:
        return fs.open(path, "rb")
    return io.BytesIO(fs.cat_file(path, max_concurrency=1))


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.isdir(path))


def is_glob(uri: str) -> bool:
    """A pattern to expand: glob characters, and no file or folder of that very name (a folder
    may well be called ``scans[2024]``)."""
    fs, path = filesystem(uri)
    return any(ch in path for ch in "*?[") and not fs.exists(path)


def expand(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """A file, a folder (recursively) or a glob -> sorted file URIs, filtered by suffix. In a
    folder, what lies below a folder whose name starts with ``_`` or ``.`` (vaezip's ``_done/``
    and ``_manifest/``, a writer's ``.staging`` folder, ``.ipynb_checkpoints``) and hidden files
    are left out, as Spark and pyarrow's datasets leave them."""
    return [u for u, _ in expand_identified(uri, suffixes)]


def expand_identified(uri: str, suffixes: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``expand``, each file with its identity as the listing gives it (``identity``): one
    listing, no request per file."""
    fs, path = filesystem(uri)
    if is_glob(uri):
        found = {p: i for p, i in fs.glob(path, detail=True).items() if i.get("type") == "file"}
    elif fs.isdir(path):
        if isinstance(fs, LocalFileSystem):  # no listing entry per file kept: see _walk_local
            found_local = [f for f in _walk_local(path) if not suffixes or f[0].lower().endswith(suffixes)]
            found_local.sort()  # in place: no second list of 100,000 entries
            return found_local
        base = path.rstrip("/") + "/"
        found = {p: i for p, i in fs.find(path, detail=True).items() if not _bookkeeping(p[len(base) :])}
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise FileNotFoundError(uri)
    if suffixes:
        found = {p: i for p, i in found.items() if p.lower().endswith(suffixes)}
    return sorted((_unstrip(fs, p), identity(i)) for p, i in found.items())


def _walk_local(folder: str) -> Iterator[tuple[str, str]]:
    """``fs.find(detail=True)`` of a local folder, without its dict of a dozen fields per file
    (a kilobyte a file, all held at once: the driver's peak at 100,000 shards) and without
    descending into bookkeeping folders: (path, identity) of every entry that is not a folder
    (a symlink is listed, not followed; its identity is the target's size and the link's
    mtime), as fsspec's local listing gives them, so recorded identities still match."""
    try:
        entries = os.scandir(folder)  # one entry at a time, not a list of them all
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            if entry.name.startswith((".", "_") if entry.is_dir(follow_symlinks=False) else "."):
                continue
            path = posixpath.join(folder, entry.name)
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_local(path)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was listed
            size = st.st_size
            if entry.is_symlink():
                try:
                    size = os.stat(path).st_size
                except OSError:
                    size = 0
            yield path, f"{size}:{st.st_mtime}"


def _bookkeeping(relpath: str) -> bool:
    """A path under a ``_`` or ``.`` folder, or a hidden file: not data (``expand``)."""
    *folders, name = relpath.split("/")
    return name.startswith(".") or any(f.startswith(("_", ".")) for f in folders)


# what tells one version of a file from another, by store: an object store's ETag or version,
# a disk's modification time (with the size, which every store lists)
_VERSION_KEYS = (
    "VersionId",
    "version_id",
    "generation",
    "ETag",
    "etag",
    "md5Hash",
    "mtime",
    "LastModified",
    "created",
)


def identity(info: dict) -> str:
    """``<size>:<version>`` of a file from its listing entry: a changed file gets another."""
    version = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None), "")
    return f"{int(info.get('size') or 0)}:{version}"


def listdir(uri: str) -> list[str]:
    """Names directly inside a folder (none if it does not exist)."""
    return _names(*filesystem(uri))


def iter_names(uri: str, depth: int = 0) -> Iterator[str]:
    """The names in a folder (``depth`` > 0: also that many sub-folders down, not under ``_``
    or ``.`` folders, as relative paths), unsorted and one at a time on a disk: what a check
    of 100,000 names needs without holding them (none if the folder does not exist)."""
    fs, path = filesystem(uri)
    if not isinstance(fs, LocalFileSystem):
        yield from (file_sizes(uri, depth) if depth else _names(fs, path))
        return
    try:
        with os.scandir(path) as it:
            for e in it:
                if depth and e.is_dir(follow_symlinks=False):
                    if not e.name.startswith(("_", ".")):
                        yield from (f"{e.name}/{n}" for n in iter_names(join(uri, e.name), depth - 1))
                else:
                    yield e.name
    except (FileNotFoundError, NotADirectoryError):
        return


def _names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    try:
        if isinstance(fs, LocalFileSystem):
            return sorted(os.listdir(path))
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def file_sizes(uri: str, depth: int = 0) -> dict[str, int]:
    """The files directly inside a folder, name -> bytes, from one listing (none if it does not
    exist); ``depth`` > 0: also those that many sub-folders down (not under ``_`` or ``.``
    folders), by their paths relative to the folder, a listing a folder."""
    sizes, folders = _listing(*filesystem(uri))
    if depth > 0:
        for sub in folders:
            if not sub.startswith(("_", ".")):
                sizes.update((f"{sub}/{n}", b) for n, b in file_sizes(join(uri, sub), depth - 1).items())
    return sizes


def _listing(fs: fsspec.AbstractFileSystem, path: str) -> tuple[dict[str, int], list[str]]:
    """One folder's files (name -> bytes) and sub-folders."""
    try:
        if isinstance(fs, LocalFileSystem):  # a DirEntry's stat, not fsspec's dict per file
            sizes, folders = {}, []
            with os.scandir(path) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        sizes[e.name] = e.stat(follow_symlinks=False).st_size
                    elif e.is_dir(follow_symlinks=False):
                        folders.append(e.name)
            return sizes, folders
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}, []
    named = [(posixpath.basename(e["name"].rstrip("/")), e) for e in entries]
    return (
        {n: int(e["size"]) for n, e in named if e["type"] == "file"},
        [n for n, e in named if e["type"] == "directory"],
    )


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_object_store(fs):
        fs.makedirs(path, exist_ok=True)


def temp_name(path: str, tag: str) -> str:
    """The temporary name beside ``path``: hidden, marked as vaezip's (``.vz``) and as the
    job's (``tag``), so a clean-up can tell it from anyone else's ``.tmp`` file."""
    marker = f"vz-{tag}" if tag else "vz"
    return posixpath.join(
        posixpath.dirname(path), f".{posixpath.basename(path)}.{marker}.{uuid.uuid4().hex}.tmp"
    )


@contextmanager
def atomic_write(uri: str, tag: str = "") -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing so it appears whole or not at all; ``tag`` marks the
    temporary file as the job's own (see ``remove_stale_temps``)."""
    fs, path = filesystem(uri)
    if is_object_store(fs):
        # An object appears when its upload completes on close. On an error, abort the upload
        # (``discard``) and mark the file closed without closing it: ``close`` would upload
        # whatever had been written so far under the final name.
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            f.discard()
            f.closed = True
            raise
        f.close()
        return
    fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path, tag)
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _temp_tag(name: str) -> str | None:
    """The tag of a temporary name ``temp_name`` made ("" for an untagged one), else None."""
    m = _TEMP.fullmatch(name)
    return None if m is None else (m.group(1) or "")


_TEMP = re.compile(r"\.[^/]+\.vz(?:-([0-9a-f]{16}))?\.[0-9a-f]{32}\.tmp")


def remove_stale_temps(folder: str, tags: tuple[str, ...] | None, subfolders: tuple[str, ...] = ()) -> int:
    """Delete the temporary files that vaezip writers left when they died mid-write, in
    ``folder`` and its ``subfolders`` only (the folders a job writes; not below them): files
    named exactly as ``temp_name`` names them, with one of ``tags`` ("" for untagged ones),
    or (``None``) any tag. Returns how many. Anybody else's files, ``.tmp`` or not, stay."""
    fs, path = filesystem(folder)
    if is_object_store(fs) or not fs.isdir(path):
        return 0
    stale = []
    for where in (path, *(posixpath.join(path, s) for s in subfolders)):
        # names first (a temporary name is rare), then whether each match is a file
        names = (
            os.listdir(where) if isinstance(fs, LocalFileSystem) and fs.isdir(where) else _names(fs, where)
        )
        for name in names:  # unsorted: a sorted copy of 100,000 names was the driver's peak
            tag = _temp_tag(name)
            if tag is not None and (tags is None or tag in tags) and fs.isfile(posixpath.join(where, name)):
                stale.append(posixpath.join(where, name))
    for p in stale:
        fs.rm(p)
    return len(stale)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write ``uri`` only if nothing is there yet, atomically (O_EXCL on a disk, a conditional
    PUT on S3); False if something was."""
    fs, path = filesystem(uri)
    if not is_object_store(fs):
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    return True


def write_bytes(uri: str, data: bytes, tag: str = "") -> None:
    with atomic_write(uri, tag) as f:
        f.write(data)


def move(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (a copy and a delete on an object store), making its folder."""
    fs, a = filesystem(src)
    b = filesystem(dst)[1]
    if not is_object_store(fs):
        fs.makedirs(posixpath.dirname(b) or ".", exist_ok=True)
    fs.mv(a, b)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


class HashingWriter:
    """A write-only file wrapper that counts bytes and hashes them on the way through."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256, self.bytes, self.closed = f, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        self.f.write(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.closed = True
