"""WebDataset ``.tar`` shards, streamed member by member (``tarfile`` mode ``r|``).

A sample is the run of consecutive members that share a key: the member path up to the first
dot of its file name (``train/0001.jpg`` and ``train/0001.cls`` are sample ``train/0001``, with
fields ``jpg`` and ``cls``). One field holds the sample: ``column`` if given, else the first
image field (jpg, png, webp, ...) or ``npy``. Every other field passes through as a column of
that name: ``cls``/``cls2``/``index`` as integers, ``txt``/``json``/``caption`` and the like
as text, anything else as bytes (the field's last extension decides: ``label.cls`` is an
integer). The sample's key is its WebDataset key, or the archive key a vaezip decode wrote in
its ``vzkey.txt`` field (so a decoded tar archived again keeps its keys).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from functools import partial
from typing import IO, Any

import numpy as np

from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.core.hostpool import Pending, host_submit, one_ahead
from pipeline.data.readers.arrays import read_header
from pipeline.data.readers.base import Batch, Limits
from pipeline.data.readers.images import IMAGE_SUFFIXES, decode_image

IMAGE_FIELDS = tuple(s[1:] for s in IMAGE_SUFFIXES)
INT_FIELDS = ("cls", "cls2", "index", "label")
TEXT_FIELDS = ("txt", "text", "json", "jsn", "caption", "cap", "id", "url", "key")
KEY_FIELD = "vzkey.txt"  # written by pipeline.data.outputs' WebDataset writer


def split_key(name: str) -> tuple[str, str]:
    """``dir/0001.seg.png`` -> (``dir/0001``, ``seg.png``)."""
    folder, base = posixpath.split(name)
    stem, _, field = base.partition(".")
    return posixpath.join(folder, stem), field.lower()


def _npy(data: bytes, uri: str, row: int, limits: Limits = Limits()) -> np.ndarray:
    try:
        limits.check_values(read_header(io.BytesIO(data))[0], uri, row)  # before any allocation
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        raise InputError(uri, f"not a readable .npy array ({err})", row=row) from err


def _value(field: str, data: bytes, uri: str, row: int) -> Any:
    kind = field.rsplit(".", 1)[-1]
    if kind in INT_FIELDS:
        try:
            return int(data.decode().strip())
        except (UnicodeDecodeError, ValueError) as err:
            raise InputError(uri, f"field .{field} is not an integer ({data[:20]!r})", row=row) from err
    if kind in TEXT_FIELDS:
        try:
            return data.decode()
        except UnicodeDecodeError as err:
            raise InputError(uri, f"field .{field} is not UTF-8 text", row=row) from err
    return data


def _samples(f: IO[bytes], uri: str, max_member_bytes: int) -> Iterator[tuple[str, dict[str, bytes]]]:
    key: str | None = None
    fields: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                k, field = split_key(member.name)
                if k != key:
                    if key is not None:
                        yield key, fields
                    key, fields = k, {}
                if field in fields:
                    raise InputError(uri, f"sample {k!r} has field .{field} twice")
                if member.size > max_member_bytes:  # checked on the header, before reading
                    raise InputError(
                        uri,
                        f"member {member.name!r} declares {member.size:,} bytes, over the limit of "
                        f"{max_member_bytes:,}",
                    )
                extracted = tar.extractfile(member)
                assert extracted is not None
                fields[field] = extracted.read()
    except (tarfile.TarError, EOFError) as err:
        raise InputError(uri, f"truncated or corrupt tar ({err})") from err
    if key is not None:
        yield key, fields


def _decode_member(uri: str, limits: Limits, item: tuple[bytes, str, int]) -> np.ndarray:
    data, field, r = item
    return _npy(data, uri, r, limits) if field == "npy" else decode_image(data, uri, r, limits.max_pixels)


def _finish(uri: str, start: int, columns: dict, keys: list[str], samples: list[np.ndarray]) -> Batch:
    return Batch(source=uri, start_row=start, samples=samples, columns=columns, ids=keys)


def iter_webdataset(
    uri: str,
    batch_rows: int,
    column: str | None = None,
    limits: Limits = Limits(),
    workers: int = 1,
    pool: str = "threads",
    size: int | None = None,
) -> Iterator[Batch]:
    """Samples ``batch_rows`` at a time, decoded on ``workers`` threads or processes
    (``pool``), the next batch while the last is used."""
    yield from one_ahead(_submitted(uri, batch_rows, column, limits, workers, pool, size))


def _submitted(
    uri: str,
    batch_rows: int,
    column: str | None,
    limits: Limits,
    workers: int,
    pool: str,
    size: int | None,
) -> Iterator[tuple[Pending[np.ndarray], Callable[[list[np.ndarray]], Batch]]]:
    row = 0
    names: list[str] | None = None
    batch: list[tuple[str, dict[str, bytes]]] = []

    def flush() -> tuple[Pending[np.ndarray], Callable[[list[np.ndarray]], Batch]]:
        nonlocal names
        start = row - len(batch)
        keys: list[str] = []
        raw: list[tuple[bytes, str, int]] = []  # decoded below, on the host workers
        columns: dict[str, list] = {}
        for i, (key, fields) in enumerate(batch):
            r = start + i
            field = column or next((f for f in (*IMAGE_FIELDS, "npy") if f in fields), None)
            if field is None or field not in fields:
                want = (
                    f".{column} field" if column else f"image field ({', '.join(IMAGE_FIELDS)}) or .npy field"
                )
                raise InputError(uri, f"sample {key!r} has no {want}", row=r)
            data = fields.pop(field)
            if KEY_FIELD in fields:
                key = _value(KEY_FIELD, fields.pop(KEY_FIELD), uri, r)
            raw.append((data, field, r))
            if names is None:
                names = sorted(fields)
            if sorted(fields) != names:
                raise InputError(
                    uri, f"sample {key!r} has fields {sorted(fields)}, earlier samples {names}", row=r
                )
            for name in names:
                columns.setdefault(name, []).append(_value(name, fields[name], uri, r))
            keys.append(key)
        batch.clear()
        samples = host_submit(partial(_decode_member, uri, limits), raw, workers, pool)
        return samples, partial(_finish, uri, start, columns, keys)

    with storage.open_read(uri, size) as f:
        for sample in _samples(f, uri, limits.max_member_bytes):
            batch.append(sample)
            row += 1
            if len(batch) == batch_rows:
                yield flush()
        if batch:
            yield flush()
