"""The host side's own ceiling: the encode worker with its model replaced by a stand-in.

The stand-in (``StandIn``, clearly not a VAE) returns zero latents of the right shape at once,
so what is timed is everything a worker does besides the model: reading a Parquet shard of
PNG images, decoding them, converting them to model arrays, quantizing, the codec and the
archive write. Run with 1 and with N host workers (``--host-workers``), in one process, one
after the other, repeated; the ratio is taken within each repetition.
"""

from __future__ import annotations

import io
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from jobs.benches.common import Spread
from pipeline.codec.codec import CodecConfig
from pipeline.codec.quantize import QuantizerConfig
from pipeline.core import storage
from pipeline.core.hostpool import POOLS
from pipeline.data.readers import ReadOptions
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_shards
from pipeline.ledger.shard import Shard
from pipeline.model.nets.base import VAE, Posterior
from pipeline.model.nets.conv import ConvConfig
from pipeline.workers.encode import EncodeSpec, EncodeWorker


class StandIn(VAE):
    """A stand-in for the encoder: zeros of the latent shape, no arithmetic."""

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        self.channels, self.factor = config.latent_channels, config.downsample_factor

    def encode(self, x: torch.Tensor) -> Posterior:
        n, _, h, w = x.shape
        z = torch.zeros(n, self.channels, h // self.factor, w // self.factor, device=x.device)
        return Posterior(z, z)


def png_shard(crops: np.ndarray, folder: str) -> str:
    """The crops as one Parquet shard of PNG bytes (what image datasets hold)."""
    blobs = []
    for c in crops:
        buf = io.BytesIO()
        Image.fromarray(c).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    path = f"{folder}/crops.parquet"
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), path)
    return folder


def measure(
    checkpoint: str,
    crops: np.ndarray,
    workers: tuple[int, ...] = (1, 2),
    repeats: int = 3,
    pools: tuple[str, ...] = POOLS,
) -> dict:
    """Rows/s with each number of host workers, for each kind of pool (processes, threads);
    the ratios are to one worker (which runs in the reader's own thread, whatever the pool)."""
    work = tempfile.mkdtemp(prefix="vzbench-host-")
    storage.makedirs(storage.join(work, "data"))
    shard = plan_shards(png_shard(crops, storage.join(work, "data")))[0]
    out: dict = {"rows": len(crops), "pools": {}}
    for pool in pools:
        out["pools"][pool] = _measure(checkpoint, shard, work, workers, repeats, pool)
    storage.remove(work, recursive=True)
    return out


def _measure(
    checkpoint: str, shard: Shard, work: str, workers: tuple[int, ...], repeats: int, pool: str
) -> dict:
    rates: dict[int, list[float]] = {w: [] for w in workers}
    runs = {}
    for w in workers:
        spec = EncodeSpec(
            checkpoint=checkpoint,
            output=storage.join(work, f"arch-{pool}-{w}"),
            read=ReadOptions(batch_rows=256, host_pool=pool),
            device="cpu",
            threads=1,
            host_workers=w,
        )
        worker = EncodeWorker(spec)
        q, c = worker.calibrate([shard], 256, QuantizerConfig(mode="posterior"), CodecConfig())
        cfg = worker.ckpt.config
        assert isinstance(cfg, ConvConfig), "the host-only figure is for image models"
        worker.encoder.model = StandIn(cfg)
        runs[w] = (worker, q, c)
    for r in range(repeats + 1):  # the first pass warms the caches and is dropped
        for w, (worker, q, c) in runs.items():  # side by side: the ratios are within a pass
            start = time.perf_counter()
            res = worker.process(shard, JobParams(q, c, f"bench-{pool}-{w}-{r}"))
            assert res.ok, res.error
            if r:
                rates[w].append(res.rows / (time.perf_counter() - start))
    base = rates[workers[0]]
    return {
        "rows_s": {str(w): Spread.of(v).to_dict() for w, v in rates.items()},
        "speedup": {
            str(w): Spread.of([a / b for a, b in zip(v, base, strict=True)]).to_dict()
            for w, v in rates.items()
        },
    }
