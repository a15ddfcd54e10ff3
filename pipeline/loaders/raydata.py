"""Ray Data over an archive: each file read once and checked, then dequantize (and decode)
in ``map_batches``, the model in an actor pool.

    ds = read_archive("s3://latents/run1")                 # the archive's rows, as stored
    latents = with_latents(ds, "s3://latents/run1")       # + "latent" (float32), no model
    samples = with_samples(ds, "s3://latents/run1", "ckpt/", concurrency=2)   # + "sample"

What decode checks, this checks: every file the manifest (or the completion records) lists
must be there (checked on the driver, before anything runs); each read task reads its file
once and checks its size and sha256 against the record before any row leaves it; and every
file is dequantized with its own footer's quantizer and codec (read on the driver, one footer
a file, and handed to the batches by path). Rows keep their key and passthrough columns; the
``vz_`` columns are dropped from the output. On a small machine keep ``concurrency *
num_cpus`` below the cluster's CPUs: the read tasks need a CPU too.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline.codec.codec import Codec
from pipeline.codec.format import BASE_NAMES, ArchiveMeta, CodeRows, read_meta
from pipeline.core.errors import ConfigError, InputError
from pipeline.data.archive import LatentBatch, SampleDecoder, latents_of
from pipeline.ledger.integrity import listed_files, read_verified
from pipeline.ledger.shard import Listed
from pipeline.model.checkpoint import load_checkpoint

PATH = "path"  # the column naming each row's file


def _checked(uri: str) -> list[Listed]:
    """The archive's files, every one present and covered by a record (or InputError)."""
    files = listed_files(uri)
    for f in files:
        problem = f.problem()
        if problem is not None:
            raise InputError(f.uri, problem)
    return files


def file_metas(uri: str) -> dict[str, str]:
    """Each file's own footer (as JSON), by path (``read_archive`` checked the files; a file
    gone since fails its footer read, naming it)."""
    return {f.uri: read_meta(f.uri).to_json() for f in listed_files(uri)}


def _read_file(item: dict[str, Any]) -> pa.Table:
    listed = Listed(
        str(item["uri"][0]),
        str(item["name"][0]),
        int(item["rows"][0]),
        int(item["bytes"][0]),
        str(item["sha256"][0]),
    )
    data = read_verified(listed)
    table = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read()
    return table.append_column(PATH, pa.array([listed.uri] * table.num_rows, pa.string()))


def read_archive(uri: str) -> ray.data.Dataset:
    """The archive's files as a Dataset of their stored rows (plus ``path``): one read task
    a file, which checks the file against its record before it hands out a row."""
    files = _checked(uri)
    items = [
        {"uri": f.uri, "name": f.name, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in files
    ]
    return ray.data.from_items(items).map_batches(_read_file, batch_size=1, batch_format="numpy")


def _out(table: pa.Table, name: str, values: list[np.ndarray]) -> dict[str, Any]:
    keep = [c for c in table.column_names if c not in BASE_NAMES and c != PATH]
    out: dict[str, Any] = {"key": np.asarray(table["vz_key"].to_pylist(), dtype=object)}
    out.update({c: table[c].to_numpy(zero_copy_only=False) for c in keep})
    shapes = {v.shape for v in values}
    out[name] = np.stack(values) if len(shapes) == 1 else np.array(values + [None], dtype=object)[:-1]
    return out


def _latents(table: pa.Table, metas: dict[str, ArchiveMeta], codecs: dict[str, Codec]) -> LatentBatch:
    """A batch's latents, each row's from its own file's footer (a batch may span files)."""
    cols = table.select(BASE_NAMES).to_pydict()
    paths = table[PATH].to_pylist()
    latents: list[np.ndarray] = [np.empty(0)] * len(paths)
    layouts: list[Any] = [None] * len(paths)
    for path in dict.fromkeys(paths):
        if path not in metas:
            raise InputError(path, "not a file of this archive")
        idx = [i for i, p in enumerate(paths) if p == path]
        part = {k: [v[i] for i in idx] for k, v in cols.items()}
        try:
            zs, lays = latents_of(metas[path], codecs[path], path, 0, CodeRows.from_columns(part))
        except InputError as err:  # Ray Data does not number rows by file: name the key instead
            key = part["vz_key"][err.row] if err.row is not None else None
            raise InputError(path, err.reason + (f" (key {key!r})" if key is not None else "")) from err
        for j, i in enumerate(idx):
            latents[i], layouts[i] = zs[j], lays[j]
    where = paths[0] if len(set(paths)) == 1 else "archive batch"
    return LatentBatch(where, 0, cols["vz_key"], latents, layouts, {})


class _Dequantize:
    def __init__(self, metas_json: dict[str, str], uri: str) -> None:
        self.metas = {path: ArchiveMeta.from_json(m, path) for path, m in metas_json.items()}
        self.codecs = {path: Codec(m.codec) for path, m in self.metas.items()}

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        return _out(table, "latent", _latents(table, self.metas, self.codecs).latents)


class _Decode(_Dequantize):
    def __init__(self, metas_json: dict[str, str], uri: str, checkpoint: str, device: str) -> None:
        super().__init__(metas_json, uri)
        import torch

        dev = torch.device(device)
        ckpt = load_checkpoint(checkpoint, dev)
        for path, meta in self.metas.items():
            if ckpt.fingerprint != meta.model_fingerprint:
                raise ConfigError(
                    f"{path} was written with model {meta.model_fingerprint[:12]}"
                    f"..., the checkpoint is {ckpt.fingerprint[:12]}..."
                )
        self.decoder = SampleDecoder(ckpt, dev)

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        return _out(table, "sample", self.decoder.samples(_latents(table, self.metas, self.codecs)))


def with_latents(ds: ray.data.Dataset, uri: str, batch_size: int = 256) -> ray.data.Dataset:
    return ds.map_batches(
        _Dequantize,
        fn_constructor_args=(file_metas(uri), uri),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=1,
    )


def with_samples(
    ds: ray.data.Dataset,
    uri: str,
    checkpoint: str,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 256,
    device: str | None = None,
) -> ray.data.Dataset:
    """Decode in a pool of ``concurrency`` actors (``num_gpus=1`` each on a GPU cluster)."""
    device = device or ("cuda" if num_gpus else "cpu")
    return ds.map_batches(
        _Decode,
        fn_constructor_args=(file_metas(uri), uri, checkpoint, device),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
