"""FeatureWorker: the encoder's posterior means as a feature table, one Parquet file per shard.

    key: string | mean: fixed_size_list<float32>[D] | (logvar: the same) | latent_shape
    | every passthrough column of the source

D is the flattened latent size (C for an MLP, C*h*w for a conv VAE). Nothing is quantized:
these are the encoder's float32 outputs, for probes, retrieval and clustering. The worker
composes the same ``Encoder`` as EncodeWorker and the same ``run_shard`` lifecycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.completion import ShardResult, Written, run_shard
from pipeline.ledger.shard import Shard
from pipeline.workers.encode import EncodeSpec
from pipeline.workers.encoder import Encoded, Encoder, check_new_keys
from pipeline.workers.model_worker import ModelWorker

log = logging.getLogger(__name__)


def _vectors(rows: list[np.ndarray], uri: str) -> pa.FixedSizeListArray:
    flat = [r.reshape(-1).astype(np.float32) for r in rows]
    if len({f.size for f in flat}) != 1:
        raise InputError(
            uri,
            "samples of different sizes give latents of different sizes; "
            "a feature table needs one size (crop or resize first)",
        )
    return pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(flat)), flat[0].size)


@dataclass(frozen=True)
class FeatureSpec:
    encode: EncodeSpec
    with_logvar: bool = False


class FeatureWorker(ModelWorker):
    def __init__(self, spec: FeatureSpec) -> None:
        e = spec.encode
        super().__init__(e.checkpoint, e.device, e.threads, e.precision, e.host_workers, e.read.host_pool)
        self.output, self.with_logvar = e.output, spec.with_logvar
        read = replace(e.read, host_workers=self.host_workers)
        self.encoder = Encoder(self.ckpt, self.device, read, e.key_column, self.clock, dtype=self.dtype)

    def _table(self, shard: Shard, enc: Encoded) -> pa.Table:
        cols = {"key": pa.array(enc.keys, pa.string()), "mean": _vectors(enc.means, shard.source)}
        if self.with_logvar:
            cols["logvar"] = _vectors(enc.logvars, shard.source)
        cols["latent_shape"] = pa.array([list(s) for s in enc.latent_shapes], pa.list_(pa.int32()))
        return pa.table({**cols, **{k: pa.array(v) for k, v in enc.batch.columns.items()}})

    def process(self, shard: Shard, job_fingerprint: str) -> ShardResult:
        """Write ``shard.name`` (planned with the features suffix) in the output folder."""

        def body(f: storage.HashingWriter, uri: str) -> Written:
            seen: set[str] = set()
            writer = None
            rows = 0
            try:
                for enc in self.encoder.encoded(shard):
                    check_new_keys(shard, enc, seen)
                    table = self._table(shard, enc)
                    if writer is None:
                        writer = pq.ParquetWriter(f, table.schema, compression="zstd")
                    elif table.schema != writer.schema:
                        raise InputError(shard.source, "passthrough columns changed type within the shard")
                    writer.write_table(table)
                    rows += len(table)
            finally:
                if writer is not None:
                    writer.close()
            return Written(rows=rows)

        return run_shard(self.output, shard, shard.name, job_fingerprint, body, self.clock)
