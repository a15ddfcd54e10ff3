"""The latent cache a diffusion trainer would keep, against the ones they keep today.

The model: an AutoencoderKL of the SD-1.x layout (four blocks, factor 8, 4 latent channels),
trained briefly on the demo's photo crops (``jobs.benches.sdlike``) so its latents have real
structure, imported as a user imports one. The data: the demo's 64x64 photo crops, training and
held-out (each crop's latent is 4 x 8 x 8); for bytes also the demo's photos cut into 256 x 256
tiles (4 x 32 x 32 latents, the size the trainers' caches keep).

- bytes per sample: vaezip at ``--max-latent-error`` 0.01 and 0.002, with the default codec
  (zstd) and ``--codec rans`` (real encode jobs), against
  per-sample fp16 ``.npy`` and safetensors files and raw fp16 / bf16, each with the latent error
  it has (RMS over each channel's standard deviation, the worst channel);
- where a vaezip archive's bytes go (codes, footers) and the order-0 entropies of its codes
  alone, after prediction from the neighbours, and after prediction across channels too;
- reading: latents a second into a DataLoader (batch 32, one process) from ``ArchiveDataset``,
  per-sample fp16 ``.npy``, per-sample safetensors and one memory-mapped fp16 array;
- a remote archive: read from moto's S3 server with a local ``cache_dir``, its second epoch
  against the same archive read from local disk;
- calibration: ``--max-latent-error``'s calibration time against the encoder's own time on its
  rows.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jobs import encode as encode_job
from jobs._cli import run_main
from jobs.benches import sdlike
from jobs.benches.moto import s3_env
from pipeline.model.checkpoint import load_checkpoint

BLOCKS = (32, 64, 64, 64)
BOUNDS = (0.01, 0.002)
CODECS = ("zstd", "rans")


def _label(bound: float, codec: str) -> str:
    return f"vaezip --max-latent-error {bound}" + ("" if codec == "zstd" else f" --codec {codec}")


def latents_of(ckpt: str, crops: np.ndarray) -> np.ndarray:
    model = load_checkpoint(ckpt).model
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), 64):
            x = torch.from_numpy(crops[i : i + 64].transpose(0, 3, 1, 2) / np.float32(255))
            out.append(model.encode(x).mean.float().numpy())
    return np.concatenate(out)


def relative_error(z: np.ndarray, back: np.ndarray) -> float:
    """The worst channel's RMS error over its standard deviation."""
    axes = (0, 2, 3)
    return float((np.sqrt(((back - z) ** 2).mean(axis=axes)) / z.std(axis=axes)).max())


class _Files(Dataset):
    def __init__(self, paths: list[str], load: Any) -> None:
        self.paths, self.load = paths, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(self.paths[i])


class _Mapped(Dataset):
    def __init__(self, path: str) -> None:
        self.array = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[i]))


def _rate(make: Any, repeats: int) -> dict:
    """Latents a second through one pass of the loader ``make()`` gives (median of repeats)."""
    rates = []
    for _ in range(repeats):
        loader = make()
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["latent"] if isinstance(batch, dict) else batch)
        rates.append(n / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "low": min(rates), "high": max(rates)}


def measure(train_crops: np.ndarray, heldout: np.ndarray, repeats: int = 3) -> dict:
    from safetensors.numpy import load_file, save_file

    from pipeline.loaders.torch_data import ArchiveDataset

    torch.set_num_threads(1)
    out: dict = {"blocks": list(BLOCKS)}
    with tempfile.TemporaryDirectory(prefix="vzbench-cache-") as tmp:
        t0 = time.perf_counter()
        ckpt = sdlike.train(train_crops, tmp, blocks=BLOCKS)
        out["train_s"] = time.perf_counter() - t0
        crops = np.concatenate([train_crops[:1024], heldout])
        data = os.path.join(tmp, "crops")
        os.makedirs(data)
        for i in range(0, len(crops), 256):
            np.save(os.path.join(data, f"crops-{i // 256:03d}.npy"), crops[i : i + 256])
        z = latents_of(ckpt, crops)
        out["rows"], out["latent_shape"] = len(crops), list(z.shape[1:])
        t1 = time.perf_counter()
        latents_of(ckpt, crops[:512])
        encoder_s_per_row = (time.perf_counter() - t1) / 512
        fp16 = z.astype(np.float16).astype(np.float32)
        # per-sample files as the trainers' caches keep them
        npy_dir, st_dir = os.path.join(tmp, "npy"), os.path.join(tmp, "st")
        os.makedirs(npy_dir)
        os.makedirs(st_dir)
        for i, v in enumerate(z.astype(np.float16)):
            np.save(os.path.join(npy_dir, f"{i:05d}.npy"), v)
            save_file({"latent": v}, os.path.join(st_dir, f"{i:05d}.safetensors"))
        mapped = os.path.join(tmp, "all.npy")
        np.save(mapped, z.astype(np.float16))

        def per_file(folder: str) -> float:
            return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / len(z)

        stores = [
            {"store": "fp16 .npy per sample", "bytes": per_file(npy_dir), "error": relative_error(z, fp16)},
            {
                "store": "fp16 safetensors per sample",
                "bytes": per_file(st_dir),
                "error": relative_error(z, fp16),
            },
            *_fp16_stores(z),
        ]
        keys = [f"crops-{i // 256:03d}:{i % 256}" for i in range(len(z))]
        found, archives = vaezip_stores(ckpt, data, z, keys, tmp, "crops")
        stores += found
        _per_fp16(stores, z)
        out["stores"] = stores
        out["entropy"] = {str(bound): code_entropies(z, bound) for bound in BOUNDS}
        out["tiles"] = tiles_256(ckpt, tmp)
        out["calibration"] = calibration_cost(ckpt, data, encoder_s_per_row)
        # reading: batch 32, one process
        npy_files = sorted(os.path.join(npy_dir, f) for f in os.listdir(npy_dir))
        st_files = sorted(os.path.join(st_dir, f) for f in os.listdir(st_dir))
        out["read_latents_s"] = {
            **{
                f"ArchiveDataset ({_label(0.01, codec)[len('vaezip ') :]})": _rate(
                    lambda codec=codec: DataLoader(
                        ArchiveDataset(archives[0.01, codec], batch_size=32, dtype=torch.float16),
                        batch_size=None,
                    ),
                    repeats,
                )
                for codec in CODECS
            },
            "fp16 .npy per sample": _rate(
                lambda: DataLoader(_Files(npy_files, lambda p: torch.from_numpy(np.load(p))), batch_size=32),
                repeats,
            ),
            "fp16 safetensors per sample": _rate(
                lambda: DataLoader(
                    _Files(st_files, lambda p: torch.from_numpy(load_file(p)["latent"])), batch_size=32
                ),
                repeats,
            ),
            "one memory-mapped fp16 array": _rate(
                lambda: DataLoader(_Mapped(mapped), batch_size=32), repeats
            ),
        }
        out["remote"] = remote_epochs(archives[0.01, "rans"], repeats)
    return out


def vaezip_stores(
    ckpt: str, data: str, z: np.ndarray, keys: list[str], tmp: str, tag: str
) -> tuple[list[dict], dict]:
    """Encode jobs of ``data`` at each bound with each codec: a store each (bytes a sample,
    the latent error against ``z``, whose rows are keyed ``keys``), and the archives' folders."""
    from pipeline.loaders.torch_data import ArchiveDataset

    stores, archives = [], {}
    for bound in BOUNDS:
        for codec in CODECS:
            arch = os.path.join(tmp, f"arch-{tag}-{bound}-{codec}")
            argv = ["--input", data, "--checkpoint", ckpt, "--output", arch, "--codec", codec]
            t2 = time.perf_counter()
            if run_main(encode_job.main, [*argv, "--max-latent-error", str(bound)]) != 0:
                raise RuntimeError(f"encode at --max-latent-error {bound} --codec {codec} failed")
            wall = time.perf_counter() - t2
            with open(os.path.join(arch, "job.json")) as f:
                q = json.load(f)["quantizer"]
            with open(os.path.join(arch, "manifest.json")) as f:
                size = json.load(f)["bytes"]
            got = {item["key"]: item["latent"] for item in ArchiveDataset(arch, remainder="keep", columns=[])}
            back = np.stack([got[k] for k in keys])
            stores.append(
                {
                    "store": _label(bound, codec),
                    "bound": bound,
                    "codec": codec,
                    "bytes": size / len(z),
                    "error": relative_error(z, back),
                    "job_error": q["measured_latent_error"],
                    "encode_wall_s": wall,
                    **{k: v / len(z) for k, v in where_bytes_go(arch).items()},
                }
            )
            archives[bound, codec] = arch
    return stores, archives


def _fp16_stores(z: np.ndarray) -> list[dict]:
    """Raw fp16 and bf16, with the latent error each has."""
    fp16 = z.astype(np.float16).astype(np.float32)
    bf16 = torch.from_numpy(z).to(torch.bfloat16).float().numpy()
    return [
        {"store": "fp16 raw", "bytes": 2.0 * z[0].size, "error": relative_error(z, fp16)},
        {"store": "bf16 raw", "bytes": 2.0 * z[0].size, "error": relative_error(z, bf16)},
    ]


def _per_fp16(stores: list[dict], z: np.ndarray) -> None:
    for s in stores:
        s["x_fp16"] = s["bytes"] / (2.0 * z[0].size)


def tiles_256(ckpt: str, tmp: str) -> dict:
    """The same stores at the size latent caches keep (SD-1.x's 256 x 256 and up): the demo's
    photos, training and held-out, cut into 256 x 256 tiles side by side (each a 4 x 32 x 32
    latent). The footers' share shrinks with the latents (the rans model is per file), and the
    neighbours predict more of a larger latent."""
    from pipeline.data.demo_data import HELDOUT_PHOTOS, TRAIN_PHOTOS, crops, photo

    tiles = np.stack(
        [t for name in TRAIN_PHOTOS + HELDOUT_PHOTOS for _, _, t in crops(photo(name), 256, 256)]
    )
    data = os.path.join(tmp, "tiles")
    os.makedirs(data)
    np.save(os.path.join(data, "tiles-000.npy"), tiles)
    z = latents_of(ckpt, tiles)
    found, _ = vaezip_stores(ckpt, data, z, [f"tiles-000:{i}" for i in range(len(z))], tmp, "tiles")
    stores = _fp16_stores(z) + found
    _per_fp16(stores, z)
    return {
        "rows": len(z),
        "latent_shape": list(z.shape[1:]),
        "stores": stores,
        "entropy": {str(bound): code_entropies(z, bound) for bound in BOUNDS},
    }


def remote_epochs(arch: str, repeats: int) -> dict:
    """The archive served from S3 (moto's server on loopback) and read with a local
    ``cache_dir``, as a trainer reads a bucket: latents a second in its first epoch (the files
    fetched and kept) and in later ones (read from the cache, each file's sha256 checked
    again), against the same archive on local disk, passes taken in turn (batch 32, fp16)."""
    from pipeline.loaders.torch_data import ArchiveDataset

    def loader(ds: ArchiveDataset) -> DataLoader:
        return DataLoader(ds, batch_size=None)

    with tempfile.TemporaryDirectory(prefix="vzbench-remote-") as tmp, s3_env() as (fs, _):
        fs.mkdir("cache-bench")
        fs.put(arch + "/", "cache-bench/arch/", recursive=True)
        local = ArchiveDataset(arch, batch_size=32, dtype=torch.float16)
        remote = ArchiveDataset(
            "s3://cache-bench/arch", batch_size=32, dtype=torch.float16, cache_dir=os.path.join(tmp, "cache")
        )
        first = _rate(lambda: loader(remote), 1)
        later, here = [], []
        for _ in range(repeats):
            later.append(_rate(lambda: loader(remote), 1)["median"])
            here.append(_rate(lambda: loader(local), 1)["median"])
    spread = [{"median": statistics.median(r), "low": min(r), "high": max(r)} for r in (later, here)]
    return {
        "first_epoch": first,
        "later_epochs": spread[0],
        "local": spread[1],
        "ratio": spread[1]["median"] / spread[0]["median"],
    }


def where_bytes_go(arch: str) -> dict[str, float]:
    """An archive's bytes in its codes column and in its files' footers (the Parquet metadata,
    where each file keeps its quantizer and codec, a rans context model included)."""
    import pyarrow.parquet as pq

    codes = footers = 0.0
    for name in sorted(os.listdir(arch)):
        if name.endswith(".vz.parquet"):
            md = pq.ParquetFile(os.path.join(arch, name)).metadata
            footers += md.serialized_size + 8  # and its length and the closing magic
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    col = md.row_group(g).column(c)
                    if col.path_in_schema == "vz_codes":
                        codes += col.total_compressed_size
    return {"codes_bytes": codes, "footer_bytes": footers}


def code_entropies(z: np.ndarray, bound: float) -> dict[str, float]:
    """Order-0 entropies, in bits a value, of ``z`` (N, C, H, W) quantized with the step that
    gives each channel an RMS error of ``bound`` of its spread (a uniform step's error is
    step / sqrt 12): the codes alone; their residuals after rans's prediction from the
    neighbours (LOCO-I's median of left, up and left + up - up-left); and those residuals
    after each channel's is also predicted (least squares) from the earlier channels'. What a
    coder of each kind would need with one table a channel (contexts do somewhat better)."""
    std = z.std(axis=(0, 2, 3))
    q = np.rint(z / (bound * std * np.sqrt(12))[None, :, None, None]).astype(np.int64)
    pad = np.pad(q, ((0, 0), (0, 0), (1, 0), (1, 0)), mode="edge")
    w, n, nw = pad[:, :, 1:, :-1], pad[:, :, :-1, 1:], pad[:, :, :-1, :-1]
    lo, hi = np.minimum(w, n), np.maximum(w, n)
    r = q - np.where(nw >= hi, lo, np.where(nw <= lo, hi, w + n - nw))

    def bits(x: np.ndarray) -> float:
        _, counts = np.unique(x, return_counts=True)
        p = counts / counts.sum()
        return float(-(p * np.log2(p)).sum())

    channels = z.shape[1]
    across = [bits(r[:, 0])]
    for c in range(1, channels):
        earlier = r[:, :c].transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
        coef, *_ = np.linalg.lstsq(earlier, r[:, c].reshape(-1).astype(np.float64), rcond=None)
        across.append(bits(r[:, c].reshape(-1) - np.rint(earlier @ coef).astype(np.int64)))
    return {
        "alone": float(np.mean([bits(q[:, c]) for c in range(channels)])),
        "neighbours": float(np.mean([bits(r[:, c]) for c in range(channels)])),
        "neighbours_and_channels": float(np.mean(across)),
    }


def calibration_cost(ckpt: str, data: str, encoder_s_per_row: float) -> dict:
    """``--max-latent-error``'s calibration, timed in an encode worker, against the encode's own
    model time on as many rows: the same worker then encodes every shard, and its model time
    per row (what the job's summary counts) times the calibration's rows is the reference.
    ``encoder_s_per_row``: the encoder alone, outside the worker (batches of 64), for context."""
    from pipeline.codec.codec import CodecConfig
    from pipeline.codec.quantize import QuantizerConfig
    from pipeline.ledger.job import JobParams
    from pipeline.ledger.plan import plan_shards
    from pipeline.workers.encode import EncodeSpec, EncodeWorker

    worker = EncodeWorker(EncodeSpec(checkpoint=ckpt, output=tempfile.mkdtemp(), threads=1))
    shards = plan_shards(data)
    rows = 1024
    start = time.perf_counter()
    bound = QuantizerConfig(mode="latent", max_latent_error=0.01)
    q, c = worker.calibrate(shards, rows, bound, CodecConfig())
    seconds = time.perf_counter() - start
    done = [worker.process(s, JobParams(q, c, "bench")) for s in shards]
    if not all(r.ok for r in done):
        raise RuntimeError(f"the encode after calibration failed: {[r.error for r in done if not r.ok]}")
    model_s_per_row = sum(r.model_seconds for r in done) / sum(r.rows for r in done)
    return {
        "rows": rows,
        "seconds": seconds,
        "encoder_seconds": model_s_per_row * rows,
        "ratio": seconds / (model_s_per_row * rows),
        "encoder_alone_seconds": encoder_s_per_row * rows,
    }
