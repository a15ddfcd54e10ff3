"""Shared by the tests that run the jobs: the job entry points and the reference decoder."""

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from jobs import decode as decode_job
from jobs import encode as encode_job
from jobs._cli import run_main
from pipeline.codec.codec import Codec
from pipeline.codec.compress import decompress
from pipeline.codec.format import read_meta
from pipeline.model.checkpoint import load_checkpoint
from pipeline.model.precision import autocast, pick_dtype
from pipeline.workers.model_worker import pick_device
from tests.format_reader import read_archive_codes


def vaezip_latents(path):
    """An archive file's columns, and its latents as vaezip decompresses them."""
    meta = read_meta(path)
    table = pq.read_table(path).to_pydict()
    latents = decompress(
        table["vz_codes"],
        table["vz_crc32"],
        table["vz_latent_shape"],
        meta.quantizer,
        Codec(meta.codec),
        path,
        0,
    )
    return table, latents


def encode(inp, ckpt, out, *extra):
    return run_main(
        encode_job.main,
        [
            "--input",
            str(inp),
            "--checkpoint",
            ckpt,
            "--output",
            str(out),
            "--calibration-rows",
            "512",
            *extra,
        ],
    )


def decode(arch, ckpt, out, *extra):
    return run_main(
        decode_job.main, ["--input", str(arch), "--checkpoint", ckpt, "--output", str(out), *extra]
    )


def direct_reconstructions(arch, ckpt_uri, batch_rows=256, device="auto", precision="auto"):
    """What the decoder gives when called directly on the dequantized codes (FORMAT.md path),
    on the device and at the precision a job's workers pick by default (a GPU where there is
    one), so the comparison holds on a GPU machine as on a CPU."""
    if device == "auto":  # as the pool decides: GPU actors only where the job's Ray has GPUs
        gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else torch.cuda.device_count()
        device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
    dev = pick_device(device)
    dtype = pick_dtype(precision, dev)
    ckpt = load_checkpoint(ckpt_uri, dev)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run (--threads 1): a CPU's sums depend on it
    try:
        return _decoded_directly(arch, ckpt, dev, dtype, batch_rows)
    finally:
        torch.set_num_threads(threads)


def _decoded_directly(arch, ckpt, dev, dtype, batch_rows):
    out = {}
    for name in sorted(os.listdir(arch)):
        if not name.endswith(".vz.parquet"):
            continue
        rows = read_archive_codes(os.path.join(arch, name))
        for i in range(0, len(rows), batch_rows):
            chunk = rows[i : i + batch_rows]
            groups = {}
            for r in chunk:
                groups.setdefault((r["latent"].shape, tuple(r["shape"])), []).append(r)
            for (_, shape), rs in groups.items():
                z = torch.from_numpy(np.stack([r["latent"] for r in rs])).to(dev)
                size = None if ckpt.config.kind == "mlp" else tuple(shape[:2])
                with torch.inference_mode(), autocast(dev, dtype):
                    x = ckpt.model.decode(z, size).float().clamp(0, 1).cpu().numpy()
                for r, xi in zip(rs, x, strict=True):
                    if xi.ndim == 3:
                        xi = np.moveaxis(xi, 0, -1)
                    out[r["key"]] = np.clip(np.rint(xi * 255), 0, 255).reshape(shape).astype(np.uint8)
    return out


def stop_group(proc, grace: float = 5.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and all its children; SIGKILL
    them if they are not gone in ``grace`` seconds (a Ray head's graceful stop takes half a
    minute, and a test's throwaway cluster holds nothing worth it)."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def change_a_step_digit(path, keep_footer_checksum_valid: bool) -> None:
    """Change one digit of the first quantizer step inside the footer JSON, in place (the
    file keeps its size: a bit flip, or a careless hand edit)."""
    data = bytearray(path.read_bytes())
    begin = data.index(b'{"codec"')  # the footer JSON (sorted keys), ending with source_uri
    end = data.index(b'"}', data.index(b'"source_uri"', begin)) + 2
    old_digest = hashlib.sha256(bytes(data[begin:end])).hexdigest().encode()
    start = data.index(b'"step": [', begin) + len(b'"step": [')
    i = next(j for j in range(start, start + 40) if chr(data[j]) in "123456789")
    data[i] = ord("1") if data[i] != ord("1") else ord("2")
    if keep_footer_checksum_valid:  # as one who knows the format would: only the manifest catches it
        at = data.index(old_digest, end)
        data[at : at + 64] = hashlib.sha256(bytes(data[begin:end])).hexdigest().encode()
    path.write_bytes(bytes(data))
