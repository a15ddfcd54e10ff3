"""Peak memory of an encode actor for one shard and for a shard ten times larger.

Each measurement uses a fresh actor (a process's peak RSS only grows), so the figure is the
peak of a process that loaded the model and encoded exactly that shard.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from jobs.benches.rss import peak_rss_mib
from pipeline.codec.codec import CodecConfig
from pipeline.codec.quantize import QuantizerConfig
from pipeline.core import storage
from pipeline.data.readers import ReadOptions
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_shards
from pipeline.run.runner import PoolConfig, run
from pipeline.workers.encode import EncodeSpec, EncodeWorker


class MeasuredEncodeWorker(EncodeWorker):
    def peak_rss_mib(self) -> float:
        return peak_rss_mib()  # the actor's own, not the raylet's it was started from


def peak_for(ckpt_uri: str, arrays: np.ndarray, batch_rows: int) -> dict:
    work = tempfile.mkdtemp(prefix="vzmem-")
    np.save(f"{work}/shard.npy", arrays)
    shards = plan_shards(f"{work}/shard.npy")
    spec = EncodeSpec(
        checkpoint=ckpt_uri,
        output=f"{work}/arch",
        read=ReadOptions(batch_rows=batch_rows),
        device="cpu",
        threads=1,
    )

    def body(pool: Any) -> dict:
        before = pool.call_one("peak_rss_mib")
        qp, cp = pool.call_one("calibrate", shards, 512, QuantizerConfig(), CodecConfig())
        job = JobParams(quantizer=qp, codec=cp, job_fingerprint="bench")
        (result,) = list(pool.map(shards, job))
        assert result.ok, result.error
        return {
            "rows": len(arrays),
            "input_mib": arrays.nbytes / 2**20,
            "peak_after_start_mib": before,
            "peak_mib": pool.call_one("peak_rss_mib"),
        }

    out = run(MeasuredEncodeWorker, spec, PoolConfig(actors=1, use_gpus=False), body)
    storage.remove(work, recursive=True)
    return out


def measure(ckpt_uri: str, arrays: np.ndarray, batch_rows: int = 256) -> dict:
    small = peak_for(ckpt_uri, arrays, batch_rows)
    large = peak_for(ckpt_uri, np.concatenate([arrays] * 10), batch_rows)
    return {"small": small, "large": large, "ratio": large["peak_mib"] / small["peak_mib"]}
