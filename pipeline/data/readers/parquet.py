"""Tables of samples: Parquet files, and the Arrow files of a Hugging Face ``save_to_disk``.

One column holds the samples, every other column passes through. The sample column is either
encoded image bytes (plain ``binary``, or the Hugging Face ``{bytes, path}`` struct) or a tensor
(nested lists of numbers). Without ``column``, the column the file's Hugging Face ``datasets``
metadata calls an ``Image()`` is taken, else the first column of one of those types. That
metadata's features of the passthrough columns (``ClassLabel`` names, ``Value`` types) travel
with the batch into the archive. Rows are read a batch at a time (``ParquetFile.iter_batches``;
an Arrow IPC stream batch by batch), so memory is bounded by a batch plus one row group.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from pipeline.codec.format import hf_features
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.core.hostpool import Blobs, Pending, host_submit, host_submit_blobs, one_ahead
from pipeline.data.readers.base import DEFAULT_MAX_PIXELS, Batch, Limits
from pipeline.data.readers.images import decode_image


def _is_image_type(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0


def _is_tensor_type(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return True
    return False


def pick_column(schema: pa.Schema, uri: str, column: str | None) -> str:
    if column is not None:
        if column not in schema.names:
            raise InputError(uri, f"missing column {column!r}; columns are {schema.names}")
        return column
    features = hf_features(schema)
    for f in schema:
        feature = features.get(f.name)
        if isinstance(feature, dict) and feature.get("_type") == "Image" and _is_image_type(f.type):
            return f.name
    for f in schema:
        if _is_image_type(f.type) or _is_tensor_type(f.type):
            return f.name
    raise InputError(uri, f"no image-bytes or tensor column among {schema.names}; pass --column")


def _image_file(path: str | None, uri: str, row: int) -> bytes:
    """The bytes of an image a ``datasets`` Image struct names by ``path`` alone (what
    ``Dataset.to_parquet`` writes for images loaded from files): an absolute path or URL as it
    is, a relative one beside the Parquet file."""
    if not path:
        raise InputError(uri, "image struct has neither bytes nor a path", row=row)
    where = path if "://" in path or posixpath.isabs(path) else storage.join(posixpath.dirname(uri), path)
    try:
        return storage.read_bytes(where)
    except OSError as err:
        raise InputError(
            uri, f"image struct has no bytes and its path {where} cannot be read ({err})", row=row
        ) from err


def _sample(value: Any, kind: str, uri: str, row: int, max_pixels: int) -> np.ndarray:
    if value is None:
        raise InputError(uri, "sample is null", row=row)
    if kind == "image":
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None:
            data = _image_file(value.get("path") if isinstance(value, dict) else None, uri, row)
        return decode_image(data, uri, row, max_pixels)
    try:
        return np.asarray(value)
    except ValueError as err:
        raise InputError(uri, f"ragged tensor ({err})", row=row) from err


def _blobs(column: pa.Array) -> Blobs | None:
    """Image bytes without nulls (a binary column, or the ``bytes`` of a ``datasets`` Image
    struct) as their Arrow buffers; None for any other (e.g. structs with paths only)."""
    if column.null_count:
        return None
    if pa.types.is_struct(column.type):  # flatten: the children as this slice sees them
        column = dict(zip([f.name for f in column.type], column.flatten(), strict=True))["bytes"]
    t = column.type
    if column.null_count or not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        return None
    _, offsets, data = column.buffers()
    dtype = np.int64 if pa.types.is_large_binary(t) else np.int32
    where = np.frombuffer(offsets, dtype=dtype)[column.offset : column.offset + len(column) + 1]
    return Blobs(memoryview(data if data is not None else b"").cast("B"), where)


def _sample_at(kind: str, uri: str, max_pixels: int, item: tuple[Any, int]) -> np.ndarray:
    return _sample(item[0], kind, uri, item[1], max_pixels)


def _finish(
    uri: str, rows: list[int] | None, start: int, cols: dict, features: dict | None, samples: list
) -> Batch:
    return Batch(
        source=uri, start_row=start, samples=samples, columns=cols, features=features, source_rows=rows
    )


def _batches(
    uri: str,
    what: str,
    schema: pa.Schema,
    record_batches: Iterable[pa.RecordBatch],
    column: str | None,
    max_pixels: int,
    workers: int = 1,
    pool: str = "threads",
    only: tuple[int, ...] | None = None,
) -> Iterator[Batch]:
    name = pick_column(schema, uri, column)
    wanted = np.asarray(only, dtype=np.int64) if only is not None else None
    kind = "image" if _is_image_type(schema.field(name).type) else "tensor"
    features = {k: v for k, v in hf_features(schema).items() if k != name and k in schema.names}
    reading = 0  # the first row of the record batch being read

    def submitted() -> Iterator[tuple[Pending[np.ndarray], Callable[[list[np.ndarray]], Batch]]]:
        nonlocal reading
        for whole in record_batches:
            rows: list[int] | None = None
            rb = whole
            if wanted is not None:  # the rows kept, taken before anything is decoded
                lo, hi = np.searchsorted(wanted, [reading, reading + len(whole)])
                keep = wanted[lo:hi] - reading
                if not len(keep):
                    reading += len(whole)
                    continue
                rows = (keep + reading).tolist()
                rb = whole.take(pa.array(keep))
            column = rb.column(name)
            fn = partial(_sample_at, kind, uri, max_pixels)
            blobs = _blobs(column) if kind == "image" and rows is None else None
            if blobs is not None:  # image bytes as Arrow holds them, no Python object per row
                samples = host_submit_blobs(fn, blobs, reading, workers, pool)
            else:  # tensors are Python lists here: pickling them costs more than it saves
                values = column.to_pylist()
                numbers = rows if rows is not None else range(reading, reading + len(values))
                items = list(zip(values, numbers, strict=True))
                samples = host_submit(fn, items, workers, pool if kind == "image" else "threads")
            cols = {c: rb.column(c).to_pylist() for c in rb.schema.names if c != name}
            start = rows[0] if rows else reading
            yield samples, partial(_finish, uri, rows, start, cols, features or None)
            reading += len(whole)

    try:
        yield from one_ahead(submitted())
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(uri, f"corrupt {what} data ({err})", row=reading) from err


def iter_parquet(
    uri: str,
    batch_rows: int,
    column: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 1,
    pool: str = "threads",
    only: tuple[int, ...] | None = None,
    size: int | None = None,
) -> Iterator[Batch]:
    with storage.open_read(uri, size) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"not a readable Parquet file ({err})") from err
        name = pick_column(pf.schema_arrow, uri, column)
        if not _is_image_type(pf.schema_arrow.field(name).type):
            _check_tensor_sizes(pf.metadata, name, uri, max_pixels)
        yield from _batches(
            uri,
            "Parquet",
            pf.schema_arrow,
            pf.iter_batches(batch_size=batch_rows),
            column,
            max_pixels,
            workers,
            pool,
            only,
        )


def _check_tensor_sizes(md: pq.FileMetaData, name: str, uri: str, max_pixels: int) -> None:
    """Refuse, from the footer and before a row group is decoded, a tensor column whose row
    group declares more values than its rows may hold (--max-pixels pixels of up to 4
    channels a row): a few KB of run-length encoded zeros can declare gigabytes."""
    leaves = [j for j in range(md.num_columns) if md.schema.column(j).path.split(".")[0] == name]
    per_row = Limits(max_pixels=max_pixels).max_values
    first = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        values = max((rg.column(j).num_values for j in leaves), default=0)
        if values > max(rg.num_rows, 1) * per_row:
            raise InputError(
                uri,
                f"row group {i} declares {values:,} values of column {name!r} for {rg.num_rows} rows, "
                f"more than --max-pixels {max_pixels:,} (pixels of up to 4 channels a row) allows",
                row=first,
            )
        first += rg.num_rows


def _rebatched(reader: pa.RecordBatchStreamReader, rows: int) -> Iterator[pa.RecordBatch]:
    for rb in reader:
        for start in range(0, rb.num_rows, rows):
            yield rb.slice(start, rows)


def iter_arrow(
    uri: str,
    batch_rows: int,
    column: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 1,
    pool: str = "threads",
    only: tuple[int, ...] | None = None,
    size: int | None = None,
) -> Iterator[Batch]:
    """An Arrow IPC stream (what ``datasets``' ``save_to_disk`` writes as ``data-*.arrow``)."""
    with storage.open_read(uri, size) as f:
        try:
            reader = pyarrow.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"not a readable Arrow IPC stream ({err})") from err
        yield from _batches(
            uri,
            "Arrow",
            reader.schema,
            _rebatched(reader, batch_rows),
            column,
            max_pixels,
            workers,
            pool,
            only,
        )
