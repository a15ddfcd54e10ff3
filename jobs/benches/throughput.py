"""Pipeline efficiency and scaling.

Efficiency: rows/s of the whole encode (read, encoder, quantize, zstd, Parquet write) through
the Ray actor pool, divided by the bare encoder's rows/s in a tight loop on the same device,
batch size and thread count; the same for decode. Scaling: the pipeline with 1 and 2 actors.
The pool is started before timing (model load excluded) and the shards are dispatched anew
for each repetition; bare and pipeline runs alternate so drift hits both.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch

from jobs.benches.common import Spread
from pipeline.codec.codec import CodecConfig
from pipeline.codec.quantize import QuantizerConfig
from pipeline.core import storage
from pipeline.data.readers import ReadOptions
from pipeline.data.samples import to_model
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_archive, plan_shards
from pipeline.model.checkpoint import load_checkpoint
from pipeline.run.runner import PoolConfig, run
from pipeline.workers.decode import DecodeSpec, DecodeWorker
from pipeline.workers.encode import EncodeSpec, EncodeWorker


def bare_encode(ckpt_uri: str, arrays: np.ndarray, batch_rows: int, threads: int) -> float:
    """Rows/s of ``model.encode`` alone on float model arrays already in memory."""
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(ckpt_uri)
    x = torch.from_numpy(np.stack([to_model(a, ckpt.config)[0] for a in arrays]))
    with torch.inference_mode():
        ckpt.model.encode(x[:batch_rows])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(x), batch_rows):
            ckpt.model.encode(x[i : i + batch_rows]).mean.numpy()
    return len(x) / (time.perf_counter() - start)


def bare_decode(ckpt_uri: str, arrays: np.ndarray, batch_rows: int, threads: int) -> float:
    """Rows/s of ``model.decode`` alone on the posterior means of ``arrays``."""
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(ckpt_uri)
    x = torch.from_numpy(np.stack([to_model(a, ckpt.config)[0] for a in arrays]))
    size = None if ckpt.config.kind == "mlp" else tuple(arrays.shape[1:3])
    with torch.inference_mode():
        z = torch.cat([ckpt.model.encode(x[i : i + batch_rows]).mean for i in range(0, len(x), batch_rows)])
        ckpt.model.decode(z[:batch_rows], size)
        start = time.perf_counter()
        for i in range(0, len(z), batch_rows):
            ckpt.model.decode(z[i : i + batch_rows], size).numpy()
    return len(z) / (time.perf_counter() - start)


def _timed_map(pool: Any, shards: list, *args: Any) -> tuple[float, float, float]:
    """(rows/s through the pool, model share of the workers' shard time, the model's own rows/s
    inside the workers) for one pass over ``shards``."""
    start = time.perf_counter()
    results = [r for r in pool.map(shards, *args) if r.ok]
    wall = time.perf_counter() - start
    rows = sum(r.rows for r in results)
    model = sum(r.model_seconds for r in results)
    return rows / wall, model / sum(r.seconds for r in results), rows / max(1e-9, model)


def _pipeline_rates(
    ckpt_uri: str, data_uri: str, actors: int, batch_rows: int, threads: int, repeats: int
) -> tuple[list[tuple], list[tuple]]:
    """Encode and decode (rows/s, model share, model rows/s in the actor) through a pool of
    ``actors``, ``repeats`` times each."""
    work = tempfile.mkdtemp(prefix="vzbench-")
    shards = plan_shards(data_uri)
    espec = EncodeSpec(
        checkpoint=ckpt_uri,
        output=storage.join(work, "arch"),
        read=ReadOptions(batch_rows=batch_rows),
        device="cpu",
        threads=threads,
    )
    pool_config = PoolConfig(actors=actors, threads_per_actor=threads, use_gpus=False)

    def encode_body(pool: Any) -> tuple[list[tuple[float, float, float]], JobParams]:
        qp, cp = pool.call_one("calibrate", shards, 2048, QuantizerConfig(), CodecConfig())
        job = JobParams(quantizer=qp, codec=cp, job_fingerprint="bench")
        return [_timed_map(pool, shards, job) for _ in range(repeats)], job

    enc_rates, _ = run(EncodeWorker, espec, pool_config, encode_body)
    archive = plan_archive(storage.join(work, "arch"), ".npy")
    dspec = DecodeSpec(
        checkpoint=ckpt_uri,
        output=storage.join(work, "rec"),
        batch_rows=batch_rows,
        device="cpu",
        threads=threads,
    )

    def decode_body(pool: Any) -> list[tuple]:
        return [_timed_map(pool, archive) for _ in range(repeats)]

    dec_rates = run(DecodeWorker, dspec, pool_config, decode_body)
    storage.remove(work, recursive=True)
    return enc_rates, dec_rates


def measure(
    name: str, ckpt_uri: str, data_uri: str, arrays: np.ndarray, batch_rows: int, repeats: int
) -> dict:
    """Efficiency (1 actor, 1 thread) and scaling (1 vs 2 actors) for one model and dataset."""
    bare_e, bare_d, pipe_e, pipe_d, two_e, two_d = [], [], [], [], [], []
    share_e, share_d, in_actor_e, in_actor_d = [], [], [], []
    for _ in range(repeats):
        bare_e.append(bare_encode(ckpt_uri, arrays, batch_rows, 1))
        bare_d.append(bare_decode(ckpt_uri, arrays, batch_rows, 1))
        (e,), (d,) = _pipeline_rates(ckpt_uri, data_uri, 1, batch_rows, 1, 1)
        pipe_e.append(e[0])
        pipe_d.append(d[0])
        share_e.append(e[1])
        share_d.append(d[1])
        in_actor_e.append(e[2])
        in_actor_d.append(d[2])
        (e,), (d,) = _pipeline_rates(ckpt_uri, data_uri, 2, batch_rows, 1, 1)
        two_e.append(e[0])
        two_d.append(d[0])
    return {
        "name": name,
        "rows": len(arrays),
        "batch_rows": batch_rows,
        "threads": 1,
        "bare_encode_rows_s": Spread.of(bare_e).to_dict(),
        "bare_decode_rows_s": Spread.of(bare_d).to_dict(),
        "pipeline_encode_rows_s": Spread.of(pipe_e).to_dict(),
        "pipeline_decode_rows_s": Spread.of(pipe_d).to_dict(),
        "two_actor_encode_rows_s": Spread.of(two_e).to_dict(),
        "two_actor_decode_rows_s": Spread.of(two_d).to_dict(),
        "encode_efficiency": Spread.of([p / b for p, b in zip(pipe_e, bare_e, strict=True)]).to_dict(),
        "decode_efficiency": Spread.of([p / b for p, b in zip(pipe_d, bare_d, strict=True)]).to_dict(),
        "encode_scaling": Spread.of([t / p for t, p in zip(two_e, pipe_e, strict=True)]).to_dict(),
        "decode_scaling": Spread.of([t / p for t, p in zip(two_d, pipe_d, strict=True)]).to_dict(),
        # inside the one actor: the model's share of the shard time, and its own speed there
        "encode_model_share": Spread.of(share_e).to_dict(),
        "decode_model_share": Spread.of(share_d).to_dict(),
        "encode_model_rows_s_in_actor": Spread.of(in_actor_e).to_dict(),
        "decode_model_rows_s_in_actor": Spread.of(in_actor_d).to_dict(),
    }
