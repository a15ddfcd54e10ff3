"""Writers for decoded reconstructions, one output file per archive shard.

- ``npy``: one ``.npy`` array of every row (rows must share shape and dtype), streamed, with a
  ``.keys.parquet`` beside it holding ``key`` and the passthrough columns in the same order.
- ``parquet``: ``key``, ``image`` as the Hugging Face ``{bytes: PNG, path}`` struct for uint8
  images (or ``data`` as nested lists otherwise), and the passthrough columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline import storage
from pipeline.errors import InputError

OUTPUT_FORMATS = ("npy", "parquet")
SUFFIXES = {"npy": ".npy", "parquet": ".parquet"}


def is_image(x: np.ndarray) -> bool:
    return x.dtype == np.uint8 and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)))


def png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x).save(buf, format="PNG")
    return buf.getvalue()


class NpyWriter:
    def __init__(self, f: IO[bytes], uri: str, rows: int) -> None:
        self.f, self.uri, self.rows = f, uri, rows
        self.first: np.ndarray | None = None
        self.keys: list[str] = []
        self.columns: dict[str, list[Any]] = {}

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        for i, x in enumerate(samples):
            if self.first is None:
                self.first = x
                header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False,
                          "shape": (self.rows, *x.shape)}
                np.lib.format.write_array_header_2_0(self.f, header)
            if x.shape != self.first.shape or x.dtype != self.first.dtype:
                raise InputError(self.uri, f"row {keys[i]!r} has shape {x.shape} {x.dtype}, "
                                           f"earlier rows {self.first.shape} {self.first.dtype}: "
                                           "write --format parquet instead", row=len(self.keys) + i)
            self.f.write(np.ascontiguousarray(x).tobytes())
        self.keys += keys
        for k, v in columns.items():
            self.columns.setdefault(k, []).extend(v)

    def close(self) -> None:
        if len(self.keys) != self.rows:
            raise InputError(self.uri, f"wrote {len(self.keys)} rows, the archive holds {self.rows}")
        table = pa.table({"key": self.keys, **self.columns})
        with storage.atomic_write(self.uri[: -len(".npy")] + ".keys.parquet") as f:
            pq.write_table(table, f)


class ParquetImageWriter:
    def __init__(self, f: IO[bytes], uri: str, rows: int) -> None:
        self.f, self.uri = f, uri
        self.writer: pq.ParquetWriter | None = None

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        if all(is_image(x) for x in samples):
            data: dict[str, list] = {"image": [{"bytes": png(x), "path": f"{k}.png"}
                                               for k, x in zip(keys, samples, strict=True)]}
        else:
            data = {"data": [x.tolist() for x in samples]}
        table = pa.table({"key": keys, **data, **columns})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.f, table.schema, compression="zstd")
        self.writer.write_table(table.cast(self.writer.schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextmanager
def open_output(fmt: str, f: IO[bytes], uri: str, rows: int) -> Iterator[NpyWriter | ParquetImageWriter]:
    writer = NpyWriter(f, uri, rows) if fmt == "npy" else ParquetImageWriter(f, uri, rows)
    yield writer
    writer.close()
