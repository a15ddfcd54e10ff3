"""Ray Data over an archive: ``read_parquet`` of its files, then dequantize (and decode) in
``map_batches``, the model in an actor pool.

    ds = read_archive("s3://latents/run1")                 # the archive's rows, as stored
    latents = with_latents(ds, "s3://latents/run1")       # + "latent" (float32), no model
    samples = with_samples(ds, "s3://latents/run1", "ckpt/", concurrency=2)   # + "sample"

Every file of one archive shares the job's quantizer, codec and model (one job fingerprint);
the metadata is read once on the driver from the files' footers and handed to the batches.
Rows keep their key and passthrough columns; the ``vz_`` columns are dropped from the output.
On a small machine keep ``concurrency * num_cpus`` below the cluster's CPUs: the read tasks
need a CPU too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pipeline.codec.codec import Codec
from pipeline.codec.format import BASE_NAMES, ArchiveMeta, CodeRows, archive_files, read_meta
from pipeline.core.errors import ConfigError, InputError
from pipeline.data.archive import LatentBatch, SampleDecoder, latents_of
from pipeline.model.checkpoint import load_checkpoint

PATH = "path"  # Ray Data's column naming each row's file (include_paths=True)


def job_meta(uri: str) -> ArchiveMeta:
    """The one set of parameters every file of the archive was written with."""
    metas = {f: read_meta(f) for f in archive_files(uri)}
    fingerprints = {m.job_fingerprint for m in metas.values()}
    if len(fingerprints) != 1:
        raise ConfigError(
            f"{uri} mixes files of {len(fingerprints)} encode jobs; read them one job at a time"
        )
    return next(iter(metas.values()))


def read_archive(uri: str, **read_args: Any) -> ray.data.Dataset:
    """The archive's files as a Dataset of their stored rows (plus ``path``)."""
    return ray.data.read_parquet(archive_files(uri), include_paths=True, **read_args)


def _out(table: pa.Table, name: str, values: list[np.ndarray]) -> dict[str, Any]:
    keep = [c for c in table.column_names if c not in BASE_NAMES and c != PATH]
    out: dict[str, Any] = {"key": np.asarray(table["vz_key"].to_pylist(), dtype=object)}
    out.update({c: table[c].to_numpy(zero_copy_only=False) for c in keep})
    shapes = {v.shape for v in values}
    out[name] = np.stack(values) if len(shapes) == 1 else np.array(values + [None], dtype=object)[:-1]
    return out


def _latents(table: pa.Table, meta: ArchiveMeta, codec: Codec) -> LatentBatch:
    cols = table.select(BASE_NAMES).to_pydict()
    paths = table[PATH].to_pylist() if PATH in table.column_names else []
    where = paths[0] if paths and len(set(paths)) == 1 else "archive batch"
    try:
        latents, layouts = latents_of(meta, codec, where, 0, CodeRows.from_columns(cols))
    except InputError as err:  # Ray Data does not number rows by file: name the key instead
        key = cols["vz_key"][err.row] if err.row is not None else None
        raise InputError(where, err.reason + (f" (key {key!r})" if key is not None else "")) from err
    return LatentBatch(where, 0, cols["vz_key"], latents, layouts, {})


class _Dequantize:
    def __init__(self, meta_json: str, uri: str) -> None:
        self.meta = ArchiveMeta.from_json(meta_json, uri)
        self.codec = Codec(self.meta.codec)

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        return _out(table, "latent", _latents(table, self.meta, self.codec).latents)


class _Decode(_Dequantize):
    def __init__(self, meta_json: str, uri: str, checkpoint: str, device: str) -> None:
        super().__init__(meta_json, uri)
        import torch

        dev = torch.device(device)
        ckpt = load_checkpoint(checkpoint, dev)
        if ckpt.fingerprint != self.meta.model_fingerprint:
            raise ConfigError(
                f"{uri} was written with model {self.meta.model_fingerprint[:12]}"
                f"..., the checkpoint is {ckpt.fingerprint[:12]}..."
            )
        self.decoder = SampleDecoder(ckpt, dev)

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        return _out(table, "sample", self.decoder.samples(_latents(table, self.meta, self.codec)))


def with_latents(ds: ray.data.Dataset, uri: str, batch_size: int = 256) -> ray.data.Dataset:
    meta = job_meta(uri)
    return ds.map_batches(
        _Dequantize,
        fn_constructor_args=(meta.to_json(), uri),
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
    meta = job_meta(uri)
    device = device or ("cuda" if num_gpus else "cpu")
    return ds.map_batches(
        _Decode,
        fn_constructor_args=(meta.to_json(), uri, checkpoint, device),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
