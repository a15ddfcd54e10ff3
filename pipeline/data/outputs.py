r"""Writers for decoded reconstructions, one output file per archive shard.

- ``npy``: one ``.npy`` array of every row (rows must share shape and dtype), streamed, with a
  ``.keys.parquet`` beside it holding ``key`` and the passthrough columns in the same order.
- ``parquet``: ``key``, ``image`` as the Hugging Face ``{bytes: PNG, path}`` struct for uint8
  images (or ``data`` as nested lists otherwise), and the passthrough columns.

Every Parquet file a decode writes (the ``parquet`` output, a ``.npy``'s keys, an image
folder's index) carries Hugging Face ``datasets`` feature metadata: ``image`` is an
``Image()``, ``key`` a string, and passthrough columns keep the features the source recorded
(``ClassLabel`` names, ...), so ``datasets.load_dataset("parquet", ...)`` reads them as such.
- ``images``: one PNG per row (``.npy`` for non-image samples) at a path taken from its key
  (``cats/001.jpg`` -> ``cats/001.png``, ``digits:17`` -> ``digits/17.png``), and a
  ``<shard>.index.parquet`` with ``key``, ``file`` and the passthrough columns.
- ``webdataset``: one ``.tar`` per shard, following WebDataset's conventions: sample
  ``<tar key>`` holds ``<tar key>.png`` (or ``.npy``), ``<tar key>.vzkey.txt`` (the archive
  key as text) and one field per passthrough column, named ``<column>.<type>`` (``.cls`` for
  integers, ``.txt`` for text and floats, ``.json`` for lists and dicts, no extension for bytes;
  a column whose name already is a field name, ``txt``/``cls``/``json``/..., keeps it).
  The tar key is the archive key with ``%``, ``.`` and ``\`` percent-escaped (WebDataset
  splits a member's name at the first dot of its base name), and a ``/`` that would make an
  empty or absolute path too: ``urllib.parse.unquote`` gives the archive key back.
"""

from __future__ import annotations

import array
import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.codec.format import HF_KEY, hf_metadata
from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.hostpool import host_map
from pipeline.data.readers.images import IMAGE_SUFFIXES
from pipeline.data.readers.webdataset import KEY_FIELD

OUTPUT_FORMATS = ("npy", "parquet", "images", "webdataset")
SUFFIXES = {"npy": ".npy", "parquet": ".parquet", "images": ".index.parquet", "webdataset": ".tar"}


def is_image(x: np.ndarray) -> bool:
    return x.dtype == np.uint8 and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)))


def png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x).save(buf, format="PNG")
    return buf.getvalue()


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def sample_file(x: np.ndarray) -> tuple[str, bytes]:
    """A restored sample as a file: (extension, bytes)."""
    return ("png", png(x)) if is_image(x) else ("npy", npy(x))


def path_of(key: str) -> str:
    """A relative file path (without extension) for a key; never absolute, never ``..``."""
    stem, ext = posixpath.splitext(key)
    base = stem if ext.lower() in IMAGE_SUFFIXES else key.replace(":", "/")
    return "/".join(p if p not in ("", ".", "..") else "_" for p in base.split("/"))


def tar_key(key: str) -> str:
    """The WebDataset key of an archive key: reversible with ``urllib.parse.unquote``."""
    out = []
    for i, c in enumerate(key):
        if c in "%.\\" or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"%{ord(c):02X}")
        elif c == "/" and (i == 0 or i == len(key) - 1 or key[i - 1] == "/"):
            out.append("%2F")  # never an absolute path or an empty folder name
        else:
            out.append(c)
    return "".join(out)


# The extensions WebDataset's default decoders turn back into values (never its pickle ones)
FIELD_EXTENSIONS = (
    "txt",
    "text",
    "transcript",
    "cls",
    "cls2",
    "class",
    "count",
    "index",
    "inx",
    "id",
    "json",
    "jsn",
)


def field_name(column: str, value: Any) -> str:
    """A passthrough column's WebDataset field: its name, plus the extension WebDataset's
    decoders read its type from where the name has none."""
    name = column.replace("/", "_")
    if "." in name or name in FIELD_EXTENSIONS or isinstance(value, bytes):
        return name
    if isinstance(value, bool):
        return f"{name}.txt"
    if isinstance(value, int):
        return f"{name}.cls"
    if isinstance(value, list | dict):
        return f"{name}.json"
    return f"{name}.txt"


class OutputWriter:
    """A decode output for one shard. As a context manager it finishes the output on success
    (``close``) and only releases what it holds on an error (``abort``): the caller's atomic
    write then discards the file, and nothing beside it is written."""

    extra_bytes = 0  # bytes written beside the output file (images, a .npy's keys)
    host_workers, host_pool = 1, "threads"  # who encodes the image files (pipeline.core.hostpool)

    def encoded(self, samples: list[np.ndarray]) -> list[tuple[str, bytes]]:
        """``sample_file`` of each sample, on the host workers."""
        return host_map(sample_file, samples, self.host_workers, self.host_pool)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Release resources without finishing the output."""


KEY_FEATURE = {"dtype": "string", "_type": "Value"}
IMAGE_FEATURE = {"_type": "Image"}


def with_features(table: pa.Table, features: dict[str, Any]) -> pa.Table:
    """``table`` with the ``datasets`` features of those of its columns ``features`` names."""
    known = {k: v for k, v in features.items() if k in table.column_names}
    return table.replace_schema_metadata({HF_KEY: hf_metadata(known)}) if known else table


class NpyWriter(OutputWriter):
    def __init__(self, f: storage.Sink, uri: str, rows: int, features: dict[str, Any]) -> None:
        self.f, self.uri, self.rows, self.features = f, uri, rows, features
        self.first: np.ndarray | None = None
        self.keys: list[str] = []
        self.columns: dict[str, list[Any]] = {}

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        for i, x in enumerate(samples):
            if self.first is None:
                self.first = x
                header = {
                    "descr": np.lib.format.dtype_to_descr(x.dtype),
                    "fortran_order": False,
                    "shape": (self.rows, *x.shape),
                }
                np.lib.format.write_array_header_2_0(self.f, header)
            if x.shape != self.first.shape or x.dtype != self.first.dtype:
                raise InputError(
                    self.uri,
                    f"row {keys[i]!r} has shape {x.shape} {x.dtype}, "
                    f"earlier rows {self.first.shape} {self.first.dtype}: "
                    "write --format parquet instead",
                    row=len(self.keys) + i,
                )
            self.f.write(np.ascontiguousarray(x).tobytes())
        self.keys += keys
        for k, v in columns.items():
            self.columns.setdefault(k, []).extend(v)

    def close(self) -> None:
        if len(self.keys) != self.rows:
            raise InputError(self.uri, f"wrote {len(self.keys)} rows, the archive holds {self.rows}")
        table = with_features(pa.table({"key": self.keys, **self.columns}), self.features)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(self.uri[: -len(".npy")] + ".keys.parquet", buf.getvalue())
        self.extra_bytes += len(buf.getvalue())


class _TableSink(OutputWriter):
    """A Parquet stream whose schema is fixed by the first table written to it."""

    def __init__(self, f: storage.Sink, features: dict[str, Any]) -> None:
        self.f, self.features = f, features
        self.writer: pq.ParquetWriter | None = None

    def write_table(self, table: pa.Table) -> None:
        if self.writer is None:
            table = with_features(table, self.features)
            self.writer = pq.ParquetWriter(self.f, table.schema, compression="zstd")
        self.writer.write_table(table.cast(self.writer.schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.writer.close()
            self.writer = None


class ParquetImageWriter(_TableSink):
    def __init__(self, f: storage.Sink, uri: str, rows: int, features: dict[str, Any]) -> None:
        super().__init__(f, {"key": KEY_FEATURE, "image": IMAGE_FEATURE, **features})
        self.uri = uri

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        if all(is_image(x) for x in samples):
            data: dict[str, list] = {
                "image": [
                    {"bytes": b, "path": f"{k}.png"}
                    for k, (_, b) in zip(keys, self.encoded(samples), strict=True)
                ]
            }
        else:
            data = {"data": [x.tolist() for x in samples]}
        self.write_table(pa.table({"key": keys, **data, **columns}))


class ImageFolderWriter(_TableSink):
    """Image files are written under a staging folder beside the index and moved to their
    final names only when the shard is finished (``close``, after the archive file's checks):
    a shard that fails leaves none of its images under a final name."""

    def __init__(self, f: storage.Sink, uri: str, rows: int, features: dict[str, Any]) -> None:
        super().__init__(f, features)
        self.uri = uri
        self.root = posixpath.dirname(uri)
        self.staging = staging_folder(uri)
        storage.remove(self.staging, recursive=True)  # left by an attempt that died
        self.files: dict[str, str] = {}

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        files = []
        for key, (ext, data) in zip(keys, self.encoded(samples), strict=True):
            name = f"{path_of(key)}.{ext}"
            if name in self.files:
                raise InputError(
                    self.uri,
                    f"keys {self.files[name]!r} and {key!r} would both "
                    f"be written to {name}; use --format parquet",
                )
            self.files[name] = key
            try:
                storage.write_bytes(storage.join(self.staging, name), data)
                self.extra_bytes += len(data)
            except OSError as err:
                if err.errno not in (errno.ENAMETOOLONG, errno.EINVAL):
                    raise  # a full or failing disk: worth a retry
                raise InputError(
                    self.uri, f"key {key!r} cannot be a file name ({err.strerror})", row=len(self.files) - 1
                ) from err
            files.append(name)
        self.write_table(pa.table({"key": keys, "file": files, **columns}))

    def close(self) -> None:
        super().close()
        for name in self.files:
            storage.move(storage.join(self.staging, name), storage.join(self.root, name))
        storage.remove(self.staging, recursive=True)

    def abort(self) -> None:
        super().abort()
        storage.remove(self.staging, recursive=True)


def staging_folder(index_uri: str) -> str:
    """Where an image folder's files wait for their shard to finish: a hidden folder named
    after the shard's index file, beside it."""
    return storage.join(posixpath.dirname(index_uri), f".{storage.basename(index_uri)}.vz-staging")


def _field_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool | int | float):
        return str(value).encode()
    return json.dumps(value).encode()


class WebDatasetWriter(OutputWriter):
    def __init__(self, f: storage.Sink, uri: str, rows: int, features: dict[str, Any]) -> None:
        self.uri = uri
        # A "w|" stream only writes; typeshed's fileobj protocol also asks for read and seek.
        self.tar = tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
        self.seen: dict[str, str] = {}

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)  # fixed owner, mode and time: same rows, same bytes
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        for i, (key, (ext, data)) in enumerate(zip(keys, self.encoded(samples), strict=True)):
            k = tar_key(key)
            if k in self.seen:
                raise InputError(
                    self.uri, f"keys {self.seen[k]!r} and {key!r} map to the same WebDataset key {k!r}"
                )
            self.seen[k] = key
            self._add(f"{k}.{ext}", data)
            self._add(f"{k}.{KEY_FIELD}", key.encode())
            for name, values in columns.items():
                if values[i] is not None:
                    self._add(f"{k}.{field_name(name, values[i])}", _field_bytes(values[i]))

    def close(self) -> None:
        self.tar.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError, tarfile.TarError):
            self.tar.close()


WRITERS: dict[str, Callable[[storage.Sink, str, int, dict[str, Any]], OutputWriter]] = {
    "npy": NpyWriter,
    "parquet": ParquetImageWriter,
    "images": ImageFolderWriter,
    "webdataset": WebDatasetWriter,
}


def open_output(
    fmt: str,
    f: storage.Sink,
    uri: str,
    rows: int,
    features: dict[str, Any] | None = None,
    host_workers: int = 1,
    host_pool: str = "threads",
) -> OutputWriter:
    """The writer of ``fmt`` over ``f`` (the file at ``uri``) for an archive file of ``rows``;
    ``features``: the Hugging Face features of the archive's passthrough columns; image files
    are encoded on ``host_workers`` threads or processes (``host_pool``)."""
    writer = WRITERS[fmt](f, uri, rows, features or {})
    writer.host_workers, writer.host_pool = host_workers, host_pool
    return writer


KEYED_FORMATS = {"images": path_of, "webdataset": tar_key}  # formats that name files after keys


def check_sample_paths(
    fmt: str, keys: Callable[[], Iterable[tuple[str, int, str]]], partitions: int = 64, spill: int = 1 << 16
) -> None:
    """Refuse, before anything is written, two keys of the archive (in one file or in two) that
    would land on one image file or one WebDataset key: one would silently replace the other.
    ``keys()`` gives (archive file, row, key) each time it is called; ``fmt`` one of
    ``KEYED_FORMATS``.

    Memory stays bounded whatever the number of keys: each place is kept as a 64-bit hash,
    spilled to ``partitions`` files on disk by its top bits, each partition then sorted on its
    own; only where two hashes are equal are the keys read again, to name both rows (and to
    tell a real clash from two places that merely share a hash)."""
    place = KEYED_FORMATS[fmt]
    with tempfile.TemporaryDirectory(prefix="vz-keys-") as tmp:
        held = [array.array("Q") for _ in range(partitions)]  # 8 bytes a key, at most spill each

        def flush(p: int) -> None:
            with open(os.path.join(tmp, f"{p}.u64"), "ab") as f:
                held[p].tofile(f)
            del held[p][:]

        for uri, row, key in keys():
            if "\x00" in key:
                raise InputError(uri, f"key {key!r} holds a NUL character: no file can be named so", row=row)
            h = _place_hash(place(key))
            p = h % partitions
            held[p].append(h)
            if len(held[p]) >= spill:
                flush(p)
        clashing: set[int] = set()
        for p in range(partitions):
            flush(p)
            hashes = np.sort(np.fromfile(os.path.join(tmp, f"{p}.u64"), np.uint64))
            clashing.update(int(v) for v in hashes[1:][hashes[1:] == hashes[:-1]])
    if not clashing:
        return
    seen: dict[str, tuple[str, int, str]] = {}
    for uri, row, key in keys():
        where = place(key)
        if _place_hash(where) not in clashing:
            continue
        if where in seen:
            u, r, k = seen[where]
            raise ConfigError(
                f"keys {k!r} ({u} row {r}) and {key!r} ({uri} row {row}) would both be written as "
                f"{where!r} by --format {fmt}; use --format parquet or npy"
            )
        seen[where] = (uri, row, key)


def _place_hash(where: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(where.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def output_files(folder: str, name: str) -> list[str]:
    """The files that make up decode output ``name`` in ``folder`` (a .npy's keys file, an
    image folder's images listed by its index, the output itself), for a job to remove one a
    later decode no longer writes. Raises, naming the file and row, for a name that is not a
    decode output's or an index entry that would lead outside ``folder``."""
    if not any(name.endswith(s) for s in SUFFIXES.values()):
        raise InputError(storage.join(folder, name), "not a decode output's name; nothing was removed")
    uri = storage.join(folder, name)
    files = [uri]
    if name.endswith(SUFFIXES["images"]):
        try:
            listed = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=["file"])["file"].to_pylist()
        except (FileNotFoundError, KeyError, pa.ArrowInvalid):
            listed = []  # an index that is missing or unreadable lists nothing we can remove
        for row, f in enumerate(listed):
            path = storage.join(folder, f) if isinstance(f, str) and f and not f.startswith("/") else None
            if path is None or "://" in f or not storage.within(path, folder) or storage.within(folder, path):
                raise InputError(uri, f"file {f!r} lies outside {folder}; nothing was removed", row=row)
            files.append(path)
    elif name.endswith(SUFFIXES["npy"]):
        files.append(uri[: -len(".npy")] + ".keys.parquet")
    return files
