"""The GPU section (``python -m jobs.bench --only gpu``): the three cases of the GPU issue side
by side in one run, on one GPU.

For each case: the bare model in a tight loop (float arrays already in host memory, copied per
batch) at fp32 and at bf16; one reader thread alone (read + image decode + conversion to model
arrays, what one host worker can feed); the whole pipeline through the Ray pool (encode and
decode, the pool's default shape: one GPU actor with the node's CPUs as host workers); and the
host side's own ceiling with the encoder replaced by a stand-in (``jobs.benches.host``).

    demo-size conv VAE (the demo photo model), 64x64 PNG crops, batch 256
    SD-1.x-sized AutoencoderKL (diffusers config, random weights), 256x256 JPEG, batch 16
    the same at 512x512, batch 8

Every function takes the device, so the test suite runs the same code on a CPU at toy sizes.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from jobs import import_diffusers
from jobs._cli import run_main
from jobs.benches import host
from jobs.benches.throughput import _timed_map
from pipeline.codec.codec import CodecConfig
from pipeline.codec.quantize import QuantizerConfig
from pipeline.core import storage
from pipeline.data.demo_data import TRAIN_PHOTOS, photo
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.samples import to_model
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_archive, plan_shards
from pipeline.model.checkpoint import load_checkpoint
from pipeline.model.precision import autocast, pick_dtype
from pipeline.run.runner import PoolConfig, run
from pipeline.workers.decode import DecodeSpec, DecodeWorker
from pipeline.workers.encode import EncodeSpec, EncodeWorker

SD1_CONFIG = {  # the Stable Diffusion 1.x VAE's architecture (its weights are not needed here)
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


@dataclass(frozen=True)
class Case:
    name: str
    checkpoint: str
    size: int  # image side, pixels
    image_format: str  # PNG or JPEG
    batch: int
    rows: int


def sd_checkpoint(out: str, config: dict | None = None) -> str:
    """An AutoencoderKL of the SD 1.x architecture with random weights, imported as a user
    imports a real one (no download)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae: Any = AutoencoderKL(**(config or SD1_CONFIG))
    vae.save_pretrained(f"{out}/diffusers")
    if run_main(import_diffusers.main, ["--source", f"{out}/diffusers", "--output", f"{out}/ckpt"]) != 0:
        raise RuntimeError("import of the SD-sized VAE failed")
    return f"{out}/ckpt"


def image_shards(folder: str, size: int, rows: int, fmt: str, per_shard: int) -> np.ndarray:
    """Real photo crops of ``size`` (photos upscaled where smaller), as Parquet shards of
    ``fmt`` bytes; returns the crops."""
    rng = np.random.default_rng(0)
    crops = []
    for i in range(rows):
        img = photo(TRAIN_PHOTOS[i % len(TRAIN_PHOTOS)])
        if min(img.shape[:2]) < size:
            img = np.asarray(Image.fromarray(img).resize((size, size)))
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crops.append(img[y : y + size, x : x + size])
    os.makedirs(folder, exist_ok=True)
    for s in range(0, rows, per_shard):
        blobs = []
        for c in crops[s : s + per_shard]:
            buf = io.BytesIO()
            Image.fromarray(c).save(buf, format=fmt, quality=90)
            blobs.append(buf.getvalue())
        pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), f"{folder}/{s:06d}.parquet")
    return np.stack(crops)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare(checkpoint: str, crops: np.ndarray, batch: int, device: str, precision: str) -> tuple[float, float]:
    """(encode, decode) rows/s of the model alone at ``precision``; host float arrays copied
    per batch, outputs copied back."""
    dev = torch.device(device)
    dtype = pick_dtype(precision, dev)
    ckpt = load_checkpoint(checkpoint, dev)
    x = np.stack([to_model(c, ckpt.config)[0] for c in crops])
    size = (crops.shape[1], crops.shape[2])
    rates = []
    with torch.inference_mode(), autocast(dev, dtype):
        z = ckpt.model.encode(torch.from_numpy(x[:batch]).to(dev)).mean
        ckpt.model.decode(z, size)  # warm-up
        for fn in (
            lambda i: ckpt.model.encode(torch.from_numpy(x[i : i + batch]).to(dev)).mean.float().cpu(),
            lambda i: ckpt.model.decode(z[: min(batch, len(x) - i)], size).float().cpu(),
        ):
            _sync(dev)
            start = time.perf_counter()
            for i in range(0, len(x), batch):
                fn(i)
            _sync(dev)
            rates.append(len(x) / (time.perf_counter() - start))
    return rates[0], rates[1]


def reader_alone(data: str, checkpoint: str, batch: int) -> float:
    """Rows/s of one thread reading, decoding and converting, as one host worker does."""
    config = load_checkpoint(checkpoint).config
    start = time.perf_counter()
    n = 0
    for shard in plan_shards(data):
        for b in iter_batches(shard.source, ReadOptions(batch_rows=batch)):
            n += len([to_model(s, config) for s in b.samples])
    return n / (time.perf_counter() - start)


def pipeline(data: str, checkpoint: str, batch: int, device: str, repeats: int) -> dict:
    """Encode and decode rows/s through the pool at its defaults on ``device``."""
    work = tempfile.mkdtemp(prefix="vzbench-gpu-")
    shards = plan_shards(data)
    spec = EncodeSpec(
        checkpoint=checkpoint, output=f"{work}/arch", read=ReadOptions(batch_rows=batch), device=device
    )
    config = PoolConfig(use_gpus=device != "cpu", actors=1)

    def encode_body(pool: Any) -> tuple[list, Any]:
        qp, cp = pool.call_one("calibrate", shards, 512, QuantizerConfig(), CodecConfig())
        job = JobParams(quantizer=qp, codec=cp, job_fingerprint="bench")
        return [_timed_map(pool, shards, job) for _ in range(repeats)], pool.infos[0]

    enc, info = run(EncodeWorker, spec, config, encode_body)
    dspec = DecodeSpec(checkpoint=checkpoint, output=f"{work}/rec", batch_rows=batch, device=device)
    archive = plan_archive(f"{work}/arch", ".npy")
    dec = run(DecodeWorker, dspec, config, lambda pool: [_timed_map(pool, archive) for _ in range(repeats)])
    storage.remove(work, recursive=True)
    return {
        "worker": info,
        "encode_rows_s": [e[0] for e in enc],
        "encode_model_share": [e[1] for e in enc],
        "decode_rows_s": [d[0] for d in dec],
        "decode_model_share": [d[1] for d in dec],
    }


def measure_case(case: Case, data: str, crops: np.ndarray, device: str, repeats: int) -> dict:
    fp32 = bare(case.checkpoint, crops, case.batch, device, "fp32")
    bf16 = bare(case.checkpoint, crops, case.batch, device, "bf16")
    out: dict = {
        "case": case.name,
        "rows": case.rows,
        "batch": case.batch,
        "bare_fp32_rows_s": {"encode": fp32[0], "decode": fp32[1]},
        "bare_bf16_rows_s": {"encode": bf16[0], "decode": bf16[1]},
        "one_reader_rows_s": reader_alone(data, case.checkpoint, case.batch),
        "pipeline": pipeline(data, case.checkpoint, case.batch, device, repeats),
    }
    if load_checkpoint(case.checkpoint).config.kind == "conv":  # the stand-in mimics a conv VAE
        workers = (1, os.cpu_count() or 1)
        out["host_only"] = host.measure(case.checkpoint, crops[:4096], workers, repeats, ("processes",))
    return out


def measure(photos_checkpoint: str, repeats: int = 3, scale: float = 1.0, device: str = "cuda") -> dict:
    """All three cases; ``scale`` shrinks the row counts (a CPU smoke run)."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine: the GPU figures are still to be measured"}
    work = tempfile.mkdtemp(prefix="vzbench-gpucases-")
    sd = sd_checkpoint(f"{work}/sd")
    plans: list[tuple[Case, str, int]] = [
        (
            Case("demo conv VAE, 64x64 PNG", photos_checkpoint, 64, "PNG", 256, int(16384 * scale)),
            "PNG",
            2048,
        ),
        (
            Case("SD-1.x-sized AutoencoderKL, 256x256 JPEG", sd, 256, "JPEG", 16, int(1024 * scale)),
            "JPEG",
            256,
        ),
        (Case("SD-1.x-sized AutoencoderKL, 512x512 JPEG", sd, 512, "JPEG", 8, int(256 * scale)), "JPEG", 64),
    ]
    results = []
    for case, fmt, per_shard in plans:
        data = f"{work}/data-{case.size}"
        crops = image_shards(data, case.size, max(case.rows, case.batch), fmt, per_shard)
        results.append(measure_case(case, data, crops, device, repeats))
    storage.remove(work, recursive=True)
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "cpus": os.cpu_count(),
        "cases": results,
    }
