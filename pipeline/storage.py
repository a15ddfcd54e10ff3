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

import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem


class Sink(Protocol):
    """What a writer needs of its output: an open file, or a wrapper around one (the
    hashing writer of ``pipeline.completion``)."""

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


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool(set(protocols) & _OBJECT_STORES)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def open_read(uri: str) -> IO[bytes]:
    fs, path = filesystem(uri)
    return fs.open(path, "rb")


def expand(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """A file, a folder (recursively) or a glob -> sorted file URIs, filtered by suffix."""
    fs, path = filesystem(uri)
    if any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        found = [path]
    else:
        raise FileNotFoundError(uri)
    if suffixes:
        found = [p for p in found if p.lower().endswith(suffixes)]
    return sorted(_unstrip(fs, p) for p in found)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_object_store(fs):
        fs.makedirs(path, exist_ok=True)


@contextmanager
def atomic_write(uri: str) -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing so it appears whole or not at all."""
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
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def remove_stale_temps(folder: str) -> int:
    """Delete the temporary files of writers that died mid-write; returns how many.

    Only for a folder one job writes at a time (an archive or a decode output)."""
    fs, path = filesystem(folder)
    if is_object_store(fs) or not fs.isdir(path):
        return 0
    stale = [
        p
        for p in fs.find(path, withdirs=False)
        if posixpath.basename(p).startswith(".") and p.endswith(".tmp")
    ]
    for p in stale:
        fs.rm(p)
    return len(stale)


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_write(uri) as f:
        f.write(data)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)
