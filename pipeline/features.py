"""FeatureWorker: the encoder's posterior means as a feature table, one Parquet file per shard.

    key: string | mean: fixed_size_list<float32>[D] | (logvar: the same) | latent_shape
    | every passthrough column of the source

D is the flattened latent size (C for an MLP, C*h*w for a conv VAE). Nothing is quantized:
these are the encoder's float32 outputs, for probes, retrieval and clustering.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.encode import EncodeSpec, EncodeWorker, check_new_keys
from pipeline.errors import InputError
from pipeline.plan import SUFFIX, Shard, done_uri
from pipeline.worker_common import HashingWriter, ShardResult, failed

log = logging.getLogger(__name__)
FEATURES_SUFFIX = ".features.parquet"


def features_name(shard: Shard) -> str:
    return shard.name[: -len(SUFFIX)] + FEATURES_SUFFIX


def _vectors(rows: list[np.ndarray], uri: str) -> pa.FixedSizeListArray:
    flat = [r.reshape(-1).astype(np.float32) for r in rows]
    if len({f.size for f in flat}) != 1:
        raise InputError(uri, "samples of different sizes give latents of different sizes; "
                              "a feature table needs one size (crop or resize first)")
    return pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(flat)), flat[0].size)


@dataclass(frozen=True)
class FeatureSpec:
    encode: EncodeSpec
    with_logvar: bool = False


class FeatureWorker(EncodeWorker):
    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec.encode)
        self.with_logvar = spec.with_logvar

    def process(self, shard: Shard, job_fingerprint: str) -> ShardResult:  # type: ignore[override]
        start = time.perf_counter()
        name = features_name(shard)
        out_uri = storage.join(self.spec.output, name)
        rows = 0
        self.model_seconds = 0.0
        seen: set[str] = set()
        try:
            with storage.atomic_write(out_uri) as raw:
                f = HashingWriter(raw)
                writer = None
                for enc in self._encode(shard):
                    check_new_keys(shard, enc, seen)
                    cols = {"key": pa.array(enc.keys, pa.string()),
                            "mean": _vectors(enc.means, shard.source)}
                    if self.with_logvar:
                        cols["logvar"] = _vectors(enc.logvars, shard.source)
                    cols["latent_shape"] = pa.array([list(s) for s in enc.latent_shapes],
                                                    pa.list_(pa.int32()))
                    table = pa.table({**cols, **{k: pa.array(v) for k, v in
                                                 enc.batch.columns.items()}})
                    if writer is None:
                        writer = pq.ParquetWriter(f, table.schema, compression="zstd")
                    elif table.schema != writer.schema:
                        raise InputError(shard.source, "passthrough columns changed type "
                                                       "within the shard")
                    writer.write_table(table)
                    rows += len(table)
                if writer is None:
                    raise InputError(shard.source, "shard holds no rows")
                writer.close()
        except InputError as err:
            return failed(name, shard.source, err, start)
        seconds = time.perf_counter() - start
        storage.write_bytes(done_uri(self.spec.output, name), json.dumps({
            "job_fingerprint": job_fingerprint, "name": name, "source": shard.source,
            "rows": rows, "bytes": f.bytes, "sha256": f.sha256.hexdigest()}).encode())
        log.info("shard %s: %d feature rows, %.2f s", shard.name, rows, seconds)
        return ShardResult(name, shard.source, ok=True, rows=rows, input_bytes=shard.input_bytes(),
                           output_bytes=f.bytes, seconds=seconds, model_seconds=self.model_seconds)
