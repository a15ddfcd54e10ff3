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
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.errors import InputError
from pipeline.format import hf_features
from pipeline.hostpool import host_map
from pipeline.readers.base import DEFAULT_MAX_PIXELS, Batch
from pipeline.readers.images import decode_image


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


def _indexed(values: list, kind: str, uri: str, start: int, max_pixels: int, i: int) -> np.ndarray:
    return _sample(values[i], kind, uri, start + i, max_pixels)


def _batches(
    uri: str,
    what: str,
    schema: pa.Schema,
    record_batches: Iterable[pa.RecordBatch],
    column: str | None,
    max_pixels: int,
    workers: int = 1,
) -> Iterator[Batch]:
    name = pick_column(schema, uri, column)
    kind = "image" if _is_image_type(schema.field(name).type) else "tensor"
    features = {k: v for k, v in hf_features(schema).items() if k != name and k in schema.names}
    start = 0
    try:
        for rb in record_batches:
            values = rb.column(name).to_pylist()
            samples = host_map(
                partial(_indexed, values, kind, uri, start, max_pixels), range(len(values)), workers
            )
            cols = {c: rb.column(c).to_pylist() for c in rb.schema.names if c != name}
            yield Batch(source=uri, start_row=start, samples=samples, columns=cols, features=features or None)
            start += len(values)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(uri, f"corrupt {what} data ({err})", row=start) from err


def iter_parquet(
    uri: str,
    batch_rows: int,
    column: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 1,
) -> Iterator[Batch]:
    with storage.open_read(uri) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"not a readable Parquet file ({err})") from err
        yield from _batches(
            uri,
            "Parquet",
            pf.schema_arrow,
            pf.iter_batches(batch_size=batch_rows),
            column,
            max_pixels,
            workers,
        )


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
) -> Iterator[Batch]:
    """An Arrow IPC stream (what ``datasets``' ``save_to_disk`` writes as ``data-*.arrow``)."""
    with storage.open_read(uri) as f:
        try:
            reader = pyarrow.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"not a readable Arrow IPC stream ({err})") from err
        yield from _batches(
            uri, "Arrow", reader.schema, _rebatched(reader, batch_rows), column, max_pixels, workers
        )
