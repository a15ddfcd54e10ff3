"""Dataset formats -> batches of raw samples.

    input URI (file, folder, glob; any fsspec URL)
        -> list_sources(): sorted data files, one format
        -> iter_batches(source): Batch(source, start_row, samples, passthrough columns, ids)

Formats: ``.npy``/``.npz`` arrays, Parquet (image bytes or tensors), the Arrow files of a
Hugging Face ``save_to_disk`` (``data-*.arrow``), WebDataset ``.tar`` (img2dataset's output
too: its ``.parquet`` indexes beside the tars are left out) and image files.
Image files are read as groups (``members``) under a root folder.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.hostpool import POOLS
from pipeline.data.readers.arrays import iter_npy, iter_npz, npy_rows
from pipeline.data.readers.base import Batch, Limits
from pipeline.data.readers.images import IMAGE_SUFFIXES, iter_images
from pipeline.data.readers.parquet import iter_arrow, iter_parquet
from pipeline.data.readers.webdataset import iter_webdataset

__all__ = ["Batch", "ReadOptions", "count_rows", "format_of", "iter_batches", "list_sources", "thinned"]

SUFFIXES = {
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".tar": "webdataset",
    **{s: "images" for s in IMAGE_SUFFIXES},
}


ARRAY_SAMPLES = ("rows", "whole")


@dataclass(frozen=True)
class ReadOptions:
    batch_rows: int = 256
    array_key: str | None = None  # .npz: which array holds the samples
    column: str | None = None  # Parquet column / WebDataset field holding the samples
    limits: Limits = Limits()  # what one sample may claim (pixels, tar member bytes)
    host_workers: int = 1  # workers decoding a batch's images (pipeline.core.hostpool)
    host_pool: str = "processes"  # what they are: "processes" or "threads"
    # only these rows (sorted row numbers: a sample spread over a file, for calibration);
    # image groups, Parquet and Arrow skip the others before decoding them, the rest after
    only_rows: tuple[int, ...] | None = None
    # .npy/.npz: "rows" (each row of the array is a sample) or "whole" (the array is one sample:
    # a raster, a scan); the other formats hold one sample a row or member either way
    array_samples: str = "rows"
    # the source's bytes as listed at plan time (None: unknown); an object store then reads it
    # without asking its size first (storage.open_read)
    source_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.array_samples not in ARRAY_SAMPLES:
            raise ConfigError(f"--sample-shape must be one of {ARRAY_SAMPLES}, got {self.array_samples!r}")
        if self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be positive, got {self.batch_rows}")
        if self.host_workers < 1:
            raise ConfigError(f"host workers must be positive, got {self.host_workers}")
        if self.only_rows is not None and list(self.only_rows) != sorted(set(self.only_rows)):
            raise ConfigError("only_rows must be sorted row numbers without repeats")
        if self.host_pool not in POOLS:
            raise ConfigError(f"host pool must be one of {POOLS}, got {self.host_pool!r}")


def format_of(uri: str) -> str:
    for suffix, fmt in SUFFIXES.items():
        if uri.lower().endswith(suffix):
            return fmt
    raise InputError(uri, f"unknown format; expected one of {sorted(SUFFIXES)}")


def list_sources(uri: str) -> list[str]:
    """Data files under ``uri``, sorted; all of one format."""
    return [f for f, _ in list_identified(uri)]


def list_identified(uri: str) -> list[tuple[str, str]]:
    """``list_sources``, each file with its identity from the listing (``storage.identity``)."""
    try:
        found = storage.expand_identified(uri, tuple(SUFFIXES))  # sorted by path
    except FileNotFoundError as err:
        raise InputError(uri, "no such file, folder or bucket") from err
    except PermissionError as err:
        raise InputError(uri, f"permission denied ({err})") from err
    if not found:
        raise InputError(uri, f"no data files ({', '.join(sorted(SUFFIXES))}) found")
    found = _without_tar_indexes(found)
    formats = {format_of(f) for f, _ in found}
    if len(formats) > 1:
        raise InputError(uri, f"mixed formats {sorted(formats)}; point at one kind of file")
    return found


def _without_tar_indexes(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """img2dataset's layout: ``00000.tar`` beside its index ``00000.parquet`` (one row per URL
    tried, with its status). The tars hold every sample that was fetched, with the same
    captions and metadata, so they are the data and the indexes are left out."""
    tars = {f[: -len(".tar")] for f, _ in files if format_of(f) == "webdataset"}
    if not tars:
        return files
    return [(f, i) for f, i in files if not (format_of(f) == "parquet" and posixpath.splitext(f)[0] in tars)]


def iter_batches(
    source: str, options: ReadOptions = ReadOptions(), members: tuple[str, ...] = ()
) -> Iterator[Batch]:
    """Batches of ``source``; for a group of image files, ``source`` is their root folder."""
    fmt = "images" if members else format_of(source)
    workers, pool, only = options.host_workers, options.host_pool, options.only_rows
    rows, pixels, size = options.batch_rows, options.limits.max_pixels, options.source_bytes
    try:
        if fmt == "images":  # one image file alone is a group of one under its folder
            root = source if members else posixpath.dirname(source)
            yield from iter_images(members or (source,), root, rows, pixels, workers, pool, only)
        elif fmt == "webdataset":
            yield from thinned(
                iter_webdataset(source, rows, options.column, options.limits, workers, pool, size), only
            )
        elif fmt == "npy":
            whole = options.array_samples == "whole"
            yield from thinned(iter_npy(source, rows, options.limits, whole, size), only)
        elif fmt == "npz":
            whole = options.array_samples == "whole"
            yield from thinned(iter_npz(source, rows, options.array_key, options.limits, whole, size), only)
        elif fmt == "arrow":
            yield from iter_arrow(source, rows, options.column, pixels, workers, pool, only, size)
        else:
            yield from iter_parquet(source, rows, options.column, pixels, workers, pool, only, size)
    except FileNotFoundError as err:
        raise InputError(err.filename or source, "file not found") from err
    except PermissionError as err:
        raise InputError(err.filename or source, f"permission denied ({err})") from err


def thinned(batches: Iterator[Batch], only: tuple[int, ...] | None) -> Iterator[Batch]:
    """Only the rows ``only`` names (all where None), with their source rows."""
    wanted = set(only) if only is not None else None
    for b in batches:
        if wanted is None:
            yield b
            continue
        keep = [i for i, r in enumerate(b.rows) if r in wanted]
        if keep:
            yield Batch(
                source=b.source,
                start_row=b.rows[keep[0]],
                samples=[b.samples[i] for i in keep],
                columns={k: [v[i] for i in keep] for k, v in b.columns.items()},
                ids=[b.ids[i] for i in keep] if b.ids is not None else None,
                features=b.features,
                source_rows=[b.rows[i] for i in keep],
            )


def count_rows(source: str, members: tuple[str, ...] = (), whole: bool = False) -> int | None:
    """How many rows ``source`` holds, where its header says so cheaply (image groups,
    Parquet, .npy); None for the others (Arrow streams, .npz, WebDataset). ``whole``: arrays
    read as one sample (``array_samples="whole"``) hold one."""
    if members:
        return len(members)
    fmt = format_of(source)
    if fmt == "images" or (whole and fmt in ("npy", "npz")):
        return 1
    try:
        with storage.open_read(source) as f:
            if fmt == "parquet":
                return int(pq.ParquetFile(f).metadata.num_rows)
            if fmt == "npy":
                return int(npy_rows(f, source))
    except (OSError, pa.ArrowInvalid):  # the read itself reports it, with its row
        return None
    return None
