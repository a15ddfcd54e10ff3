"""Streaming readers for ``.npy`` and ``.npz`` files.

Rows are read ``batch_rows`` at a time straight from the byte stream (local or remote), so
memory is bounded by the batch, not the file. Object arrays are refused, and nothing is ever
unpickled (``allow_pickle`` is never set).

In an ``.npz``, one array holds the samples (``array_key``, or the only array, or one named
x / image / images / data); every other array with the same number of rows is a passthrough
column (labels, ids).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.data.readers.base import Batch, Limits

DATA_KEYS = ("x", "image", "images", "data")


def read_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """A .npy stream's (shape, fortran_order, dtype), read from its header alone."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), bool(fortran), dtype


class _NpyStream:
    """Reads rows of one .npy stream without holding the whole array."""

    def __init__(self, f: IO[bytes], uri: str, scalar_ok: bool = False, limits: Limits | None = None) -> None:
        self.f, self.uri = f, uri
        try:
            shape, fortran, dtype = read_header(f)
        except ValueError as err:
            raise InputError(uri, f"not a readable .npy array ({err})") from err
        if dtype.hasobject:
            raise InputError(uri, "object arrays are refused (they need pickle)")
        if len(shape) == 0 and not scalar_ok:
            raise InputError(uri, "a 0-d array holds no rows")
        if fortran and len(shape) > 1:
            raise InputError(
                uri, "Fortran-ordered arrays cannot be streamed by row; save with np.ascontiguousarray"
            )
        if limits is not None and len(shape) > 1:
            limits.check_values(tuple(shape[1:]), uri, row=0)
        self.shape, self.dtype = tuple(shape), dtype
        self.rows = shape[0] if shape else 0
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.pos = 0

    def read(self, n: int) -> np.ndarray:
        n = min(n, self.rows - self.pos)
        want = n * self.row_bytes
        data = self.f.read(want) if want else b""
        if len(data) != want:
            got = self.pos + len(data) // max(self.row_bytes, 1)
            raise InputError(
                self.uri, f"file is truncated: header says {self.rows} rows, data ends early", row=got
            )
        self.pos += n
        return np.frombuffer(data, dtype=self.dtype).reshape((n, *self.shape[1:]))


def npy_rows(f: IO[bytes], uri: str) -> int:
    """The rows a .npy stream's header declares."""
    return _NpyStream(f, uri).rows


def _rows_of(arr: np.ndarray) -> list[Any]:
    return arr.tolist() if arr.ndim == 1 else list(arr.copy())


def _whole(stream: _NpyStream, uri: str, limits: Limits) -> Batch:
    """The whole array as one sample (row 0), bounded like any sample before it is read."""
    limits.check_values(stream.shape, uri, row=0)
    return Batch(source=uri, start_row=0, samples=[stream.read(stream.rows).copy()])


def iter_npy(
    uri: str, batch_rows: int, limits: Limits = Limits(), whole: bool = False, size: int | None = None
) -> Iterator[Batch]:
    with storage.open_read(uri, size) as f:
        if whole:
            yield _whole(_NpyStream(f, uri), uri, limits)
            return
        stream = _NpyStream(f, uri, limits=limits)
        while stream.pos < stream.rows:
            start = stream.pos
            block = stream.read(batch_rows)
            yield Batch(source=uri, start_row=start, samples=list(block.copy()))


def _pick_data_key(names: list[str], uri: str, array_key: str | None) -> str:
    if array_key is not None:
        if array_key not in names:
            raise InputError(uri, f"no array {array_key!r}; arrays are {names}")
        return array_key
    if len(names) == 1:
        return names[0]
    for key in DATA_KEYS:
        if key in names:
            return key
    raise InputError(uri, f"which array holds the samples? found {names}; pass --array-key")


def iter_npz(
    uri: str,
    batch_rows: int,
    array_key: str | None = None,
    limits: Limits = Limits(),
    whole: bool = False,
    size: int | None = None,
) -> Iterator[Batch]:
    with storage.open_read(uri, size) as f:
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as err:
            raise InputError(uri, f"not a readable .npz archive ({err})") from err
        with zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            key = _pick_data_key(names, uri, array_key)
            if whole:  # the one array, no passthrough columns: other arrays describe no rows
                try:
                    yield _whole(_NpyStream(zf.open(f"{key}.npy"), f"{uri}[{key}]"), f"{uri}[{key}]", limits)
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise InputError(uri, f"corrupt .npz data ({err})", row=0) from err
                return
            try:
                data = _NpyStream(zf.open(f"{key}.npy"), f"{uri}[{key}]", limits=limits)
                extra = {
                    n: _NpyStream(zf.open(f"{n}.npy"), f"{uri}[{n}]", scalar_ok=True)
                    for n in names
                    if n != key
                }
            except (zipfile.BadZipFile, OSError) as err:
                raise InputError(uri, f"corrupt .npz member ({err})") from err
            # Arrays of one value per row pass through; 0-d metadata (a date, a unit) and
            # arrays of other lengths beside the samples are left out.
            columns = {n: s for n, s in extra.items() if s.shape and s.rows == data.rows}
            while data.pos < data.rows:
                start = data.pos
                try:
                    block = data.read(batch_rows)
                    cols = {n: _rows_of(s.read(batch_rows)) for n, s in columns.items()}
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise InputError(uri, f"corrupt .npz data ({err})", row=start) from err
                yield Batch(source=uri, start_row=start, samples=list(block.copy()), columns=cols)
