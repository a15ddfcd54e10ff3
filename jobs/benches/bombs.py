"""A worker's peak memory on hostile input: decompression bombs, each refused from its headers.

Each case runs in a fresh process (a process's peak RSS only grows): the worker loads the demo
photo model, then processes one shard holding the bomb beside good rows. The figure is that
process's peak RSS, next to the same worker's peak on a good shard of the same rows.

    png 50000x50000 (45 bytes)        Parquet image column     encode
    png 12000x12000 header            image folder             encode
    tar member declaring 16 GB        WebDataset tar           encode
    npy declaring 600000x600000x3     .npy (128 bytes)         encode
    npz member 20000x20000x3 zeros    .npz (deflated, ~1.2 MB) encode
    row frame declaring 1 GiB         archive, --framing row   decode
    rans model of 3,000 channels      archive footer (7 KB)    decode
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from PIL import Image

from jobs.benches.rss import peak_rss_mib

CASES = (
    "good shard",
    "png 50000x50000",
    "png 12000x12000",
    "tar member 16 GB",
    "npy 600000x600000x3",
    "npz 20000x20000x3",
    "row frame 1 GiB",
    "rans model 3000 channels",
)
DECODE_CASES = ("row frame 1 GiB", "rans model 3000 channels")


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy's magic and header alone, declaring ``shape`` of uint8."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def deflated_npz(path: str, shape: tuple[int, ...]) -> None:
    """An .npz whose one member declares ``shape`` of uint8 zeros, deflated, written in 1 MiB
    steps (making it does not raise this process's peak)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header(shape))
            left = int(np.prod(shape))
            while left:
                f.write(bytes(min(left, 1 << 20)))
                left -= min(left, 1 << 20)


def model_bomb(channels: int) -> bytes:
    """A rans context model (version 1) declaring ``channels`` channels of full tables,
    zstd-compressed."""
    from pipeline.codec.ctxcoder import GROUPS, MAX_ALPHABET, SCALE_BITS, SIGNS
    from pipeline.codec.ctxcoder import encode_varints as varints

    table = [1] * (MAX_ALPHABET - 1) + [(1 << SCALE_BITS) - (MAX_ALPHABET - 1)]
    channel = varints([0, MAX_ALPHABET, *([0] * (GROUPS - 1)), *(table * (GROUPS * SIGNS))])
    raw = bytes([1, SCALE_BITS, GROUPS, SIGNS]) + varints([channels]) + channel * channels
    return zstandard.ZstdCompressor(level=19).compress(raw)


def _png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    data = bytearray(_png(np.zeros((1, 1, 3), np.uint8)))
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", width, height)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])) & 0xFFFFFFFF)
    return bytes(data)


def _write_case(case: str, crops: np.ndarray, work: str) -> str:
    """The shard of one case under ``work``; returns its path."""
    images = [_png(c) for c in crops]
    if case in ("good shard", "png 50000x50000"):
        if case != "good shard":
            images[len(images) // 2] = png_declaring(50000, 50000)
        pq.write_table(pa.table({"image": pa.array(images, pa.binary())}), f"{work}/shard.parquet")
        return f"{work}/shard.parquet"
    if case == "npy 600000x600000x3":
        with open(f"{work}/bomb.npy", "wb") as f:
            f.write(npy_header((1, 600000, 600000, 3)))
        return f"{work}/bomb.npy"
    if case == "npz 20000x20000x3":
        deflated_npz(f"{work}/bomb.npz", (1, 20000, 20000, 3))
        return f"{work}/bomb.npz"
    if case == "png 12000x12000":
        os.makedirs(f"{work}/images")
        for i, data in enumerate(images[:8]):
            with open(f"{work}/images/{i}.png", "wb") as f:
                f.write(data)
        with open(f"{work}/images/9-big.png", "wb") as f:
            f.write(png_declaring(12000, 12000))
        return f"{work}/images"
    with tarfile.open(f"{work}/shard.tar", "w") as t:
        for i, data in enumerate(images[:8]):
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("999.png")
        info.size = 16 << 30
        t.addfile(info)
    return f"{work}/shard.tar"


def run_one(case: str, ckpt: str, work: str) -> dict:
    """In this (fresh) process: the worker on the case's shard; peak RSS after start and after."""
    from pipeline.codec.codec import CodecConfig
    from pipeline.codec.quantize import QuantizerConfig
    from pipeline.ledger.job import JobParams
    from pipeline.ledger.plan import plan_shards
    from pipeline.workers.encode import EncodeSpec, EncodeWorker

    def peak() -> float:
        return peak_rss_mib()

    worker = EncodeWorker(EncodeSpec(checkpoint=ckpt, output=f"{work}/arch", device="cpu", threads=1))
    crops = np.load(f"{work}/crops.npy")
    np.save(f"{work}/calib.npy", crops)
    calib = plan_shards(f"{work}/calib.npy")
    config = {
        "row frame 1 GiB": CodecConfig(framing="row"),
        "rans model 3000 channels": CodecConfig(name="rans"),
    }
    q, c = worker.calibrate(calib, 256, QuantizerConfig(), config.get(case, CodecConfig()))
    job = JobParams(q, c, "bench")
    started = peak()
    if case in DECODE_CASES:
        return _decode_bomb(case, worker, calib, job, ckpt, work, peak)
    (shard,) = plan_shards(_write_case(case, crops, work))
    result = worker.process(shard, job)
    return {
        "case": case,
        "ok": result.ok,
        "error": result.error,
        "peak_after_start_mib": started,
        "peak_mib": peak(),
    }


def zeros_frame(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes that declares its size, made in 1 MiB steps (so
    making it does not raise this process's peak)."""
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(buf, size=size, closefd=False) as w:
        for _ in range(size >> 20):
            w.write(bytes(1 << 20))
    return buf.getvalue()


def _decode_bomb(
    case: str, worker: Any, calib: list, job: Any, ckpt: str, work: str, peak: Callable[[], float]
) -> dict:
    """A decode worker on an archive file carrying the bomb: a 1 GiB row frame, or a footer
    whose rans model declares 3,000 channels (its footer checksum made consistent, so only the
    file's recorded sha256 and the model's own limits stand in the way)."""
    import hashlib

    from pipeline.ledger.plan import plan_archive
    from pipeline.workers.decode import DecodeSpec, DecodeWorker

    assert worker.process(calib[0], job).ok
    path = f"{work}/arch/calib.vz.parquet"
    pf = pq.ParquetFile(path)
    t = pf.read()
    metadata = pf.schema_arrow.metadata
    if case == "row frame 1 GiB":
        codes = t["vz_codes"].to_pylist()
        frame = zeros_frame(1 << 30)  # 1 GiB of zeros in a few dozen KB
        codes[len(codes) // 2] = frame
        t = t.set_column(t.schema.get_field_index("vz_codes"), "vz_codes", pa.array(codes, pa.binary()))
        size = len(frame)
    else:
        import base64

        meta = json.loads(metadata[b"vaezip"])
        bomb = model_bomb(3000)
        meta["codec"]["model_b64"] = base64.b64encode(bomb).decode()
        raw = json.dumps(meta).encode()
        metadata = {b"vaezip": raw, b"vaezip.sha256": hashlib.sha256(raw).hexdigest().encode()}
        size = len(bomb)
    pq.write_table(t.replace_schema_metadata(metadata), path)
    decoder = DecodeWorker(DecodeSpec(checkpoint=ckpt, output=f"{work}/rec", device="cpu", threads=1))
    started = peak()
    (shard,) = plan_archive(f"{work}/arch", ".npy")
    result = decoder.process(shard)
    return {
        "case": f"{case} (decode)",
        "ok": result.ok,
        "error": result.error,
        "bomb_bytes": size,
        "peak_after_start_mib": started,
        "peak_mib": peak(),
    }


def measure(ckpt: str, crops: np.ndarray) -> list[dict]:
    """Every case, each in its own process."""
    out = []
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="vzbomb-") as work:
            np.save(f"{work}/crops.npy", crops)
            proc = subprocess.run(
                [sys.executable, "-m", "jobs.benches.bombs", case, ckpt, work],
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


if __name__ == "__main__":
    print(json.dumps(run_one(*sys.argv[1:4])))
