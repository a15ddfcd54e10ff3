"""Parquet sources: one column holds the samples, every other column passes through.

The sample column is either encoded image bytes (plain ``binary``, or the Hugging Face
``{bytes, path}`` struct) or a tensor (nested lists of numbers). Without ``column``, the first
column of one of those types is taken. Rows are read a batch at a time with
``ParquetFile.iter_batches``, so memory is bounded by a batch plus one row group.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.errors import InputError
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
    for f in schema:
        if _is_image_type(f.type) or _is_tensor_type(f.type):
            return f.name
    raise InputError(uri, f"no image-bytes or tensor column among {schema.names}; pass --column")


def _sample(value: Any, kind: str, uri: str, row: int, max_pixels: int) -> np.ndarray:
    if value is None:
        raise InputError(uri, "sample is null", row=row)
    if kind == "image":
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None:
            raise InputError(uri, "image struct has no bytes", row=row)
        return decode_image(data, uri, row, max_pixels)
    try:
        return np.asarray(value)
    except ValueError as err:
        raise InputError(uri, f"ragged tensor ({err})", row=row) from err


def iter_parquet(
    uri: str, batch_rows: int, column: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Batch]:
    with storage.open_read(uri) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"not a readable Parquet file ({err})") from err
        schema = pf.schema_arrow
        name = pick_column(schema, uri, column)
        kind = "image" if _is_image_type(schema.field(name).type) else "tensor"
        start = 0
        try:
            for rb in pf.iter_batches(batch_size=batch_rows):
                values = rb.column(name).to_pylist()
                samples = [_sample(v, kind, uri, start + i, max_pixels) for i, v in enumerate(values)]
                cols = {c: rb.column(c).to_pylist() for c in rb.schema.names if c != name}
                yield Batch(source=uri, start_row=start, samples=samples, columns=cols)
                start += len(values)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"corrupt Parquet data ({err})", row=start) from err
