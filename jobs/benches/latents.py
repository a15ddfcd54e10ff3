"""Latent storage side by side: what latent caches store today against vaezip's quantizer.

All on the same samples and the same decoder: float32 latents (the reference), float16,
naive int8 (one range for the whole tensor, clipped at the 0.1/99.9 percentiles, 256 steps,
stored raw, as int8 latent datasets do), and vaezip's quantizer modes followed by its codec,
counted as the archive file it writes (keys and checksums included); the footer, once per
file of up to thousands of rows, is reported apart.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.checkpoint import Checkpoint
from pipeline.codec import Codec, CodecConfig, CodecParams, row_bytes, train_dictionary
from pipeline.format import BASE_NAMES, ArchiveMeta, ArchiveWriter, CodeRows
from pipeline.models import config_to_dict
from pipeline.names import sample_key
from pipeline.quantize import (
    QuantizerConfig,
    QuantizerParams,
    calibrate,
    dequantize,
    quantize,
    stats_from_latents,
)
from pipeline.samples import to_model


@dataclass(frozen=True)
class Latents:
    mean: np.ndarray  # (N, C, P)
    logvar: np.ndarray
    shape: tuple[int, ...]  # one sample's latent shape (C, ...)


@torch.inference_mode()
def encode(ckpt: Checkpoint, arrays: np.ndarray, batch: int = 256) -> Latents:
    x = torch.from_numpy(np.stack([to_model(a, ckpt.config)[0] for a in arrays]))
    means, logvars = [], []
    for i in range(0, len(x), batch):
        post = ckpt.model.encode(x[i : i + batch])
        means.append(post.mean.float().numpy())
        logvars.append(post.logvar.float().numpy())
    m, lv = np.concatenate(means), np.concatenate(logvars)
    shape = m.shape[1:]
    return Latents(m.reshape(len(m), shape[0], -1), lv.reshape(len(m), shape[0], -1), shape)


@torch.inference_mode()
def reconstruct(
    ckpt: Checkpoint, z: np.ndarray, shape: tuple[int, ...], originals: np.ndarray, batch: int = 256
) -> np.ndarray:
    """(N, C, P) latents -> uint8 reconstructions in the originals' shape."""
    size = None if ckpt.config.kind == "mlp" else tuple(originals.shape[1:3])
    out = []
    for i in range(0, len(z), batch):
        zt = torch.from_numpy(np.ascontiguousarray(z[i : i + batch]).reshape(-1, *shape))
        x = ckpt.model.decode(zt.float(), size).float().clamp(0, 1).numpy()
        if x.ndim == 4:
            x = np.moveaxis(x, 1, -1)
        out.append(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out).reshape(originals.shape)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the per-sample PSNR (peak 255)."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(err, 1e-12))))


@dataclass(frozen=True)
class Stored:
    """Latents as vaezip stores them, and what that costs."""

    codes: np.ndarray  # (N, C_active, P)
    latents: np.ndarray  # dequantized, (N, C, P)
    code_bytes: int  # the vz_codes column chunks (or frames) as stored
    dictionary_bytes: int  # row framing's shared dictionary, once per file (in the footer)
    row_bytes: int  # the archive file less its footer: codes, keys, checksums, shapes
    footer_bytes: int  # once per file: schema, row-group index, metadata JSON


def vaezip_codes(
    ckpt: Checkpoint,
    lat: Latents,
    arrays: np.ndarray,
    qconfig: QuantizerConfig,
    cconfig: CodecConfig = CodecConfig(),
) -> Stored:
    """Quantize as the encode job does (calibrated on these latents) and write the rows into a
    real archive file in memory, with the ArchiveWriter the job uses."""
    pooled_m = lat.mean.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    pooled_v = lat.logvar.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    q = calibrate(stats_from_latents(pooled_m, pooled_v), qconfig)
    codes, _ = quantize(lat.mean, q)
    dictionary = train_dictionary(row_bytes(codes[:2048], cconfig.layout), cconfig)
    cparams = CodecParams(
        level=cconfig.level, layout=cconfig.layout, framing=cconfig.framing, dictionary=dictionary
    )
    code_bytes, file_bytes, footer = archive_bytes(ckpt, codes, q, cparams, lat.shape, arrays)
    return Stored(codes, dequantize(codes, q), code_bytes, len(dictionary), file_bytes - footer, footer)


def archive_bytes(
    ckpt: Checkpoint,
    codes: np.ndarray,
    q: QuantizerParams,
    cparams: CodecParams,
    latent_shape: tuple[int, ...],
    arrays: np.ndarray,
) -> tuple[int, int, int]:
    """Bytes of one archive file's stored codes column, of the whole file, and of its footer
    (with the leading magic: what a file costs however few rows it holds)."""
    payloads, crcs = Codec(cparams).encode(codes)
    meta = ArchiveMeta(
        model_fingerprint=ckpt.fingerprint,
        model_config=config_to_dict(ckpt.config),
        quantizer=q,
        codec=cparams,
        source_uri="bench.npy",
        job_fingerprint="bench",
    )
    buf = io.BytesIO()
    n = len(codes)
    rows = CodeRows(
        keys=[sample_key("bench.npy", i) for i in range(n)],
        codes=payloads,
        crc32=crcs,
        shapes=[list(arrays.shape[1:])] * n,
        dtypes=[str(arrays.dtype)] * n,
        latent_shapes=[list(latent_shape)] * n,
    )
    with ArchiveWriter(buf, meta, "bench.npy") as writer:
        writer.write(rows, {})
    md = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    col = BASE_NAMES.index("vz_codes")
    code_bytes = sum(md.row_group(i).column(col).total_compressed_size for i in range(md.num_row_groups))
    return code_bytes, len(buf.getvalue()), md.serialized_size + 12


def naive_int8(z: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(z, [0.1, 99.9])
    q = np.rint((np.clip(z, lo, hi) - lo) / (hi - lo) * 255)
    return (lo + q * (hi - lo) / 255).astype(np.float32)


QUANTIZERS = {
    "posterior, step 0.5 sigma": QuantizerConfig(mode="posterior", step_sigmas=0.5),
    "posterior, step 1 sigma (default)": QuantizerConfig(mode="posterior", step_sigmas=1.0),
    "posterior, step 2 sigma": QuantizerConfig(mode="posterior", step_sigmas=2.0),
    "affine, 8 bits": QuantizerConfig(mode="affine", bits=8),
    "affine, 6 bits": QuantizerConfig(mode="affine", bits=6),
}


def compare(ckpt: Checkpoint, arrays: np.ndarray) -> list[dict]:
    lat = encode(ckpt, arrays)
    n, values = len(arrays), lat.mean[0].size
    ref = reconstruct(ckpt, lat.mean, lat.shape, arrays)
    ref_psnr = psnr(ref, arrays)
    rows = [
        {"store": "float32 latents", "bytes_per_sample": 4 * values, "psnr": ref_psnr},
        {
            "store": "float16 latents",
            "bytes_per_sample": 2 * values,
            "psnr": psnr(
                reconstruct(ckpt, lat.mean.astype(np.float16).astype(np.float32), lat.shape, arrays), arrays
            ),
        },
        {
            "store": "naive int8 (clipped range, raw)",
            "bytes_per_sample": values,
            "psnr": psnr(reconstruct(ckpt, naive_int8(lat.mean), lat.shape, arrays), arrays),
        },
    ]
    for name, qconfig in QUANTIZERS.items():
        st = vaezip_codes(ckpt, lat, arrays, qconfig)
        rows.append(
            {
                "store": f"vaezip {name}",
                "bytes_per_sample": st.row_bytes / n,
                "footer_bytes": st.footer_bytes,
                "code_bytes_per_sample": st.code_bytes / n,
                "psnr": psnr(reconstruct(ckpt, st.latents, lat.shape, arrays), arrays),
            }
        )
    for r in rows:
        r["vs_float16_bytes"] = r["bytes_per_sample"] / (2 * values)
        r["psnr_loss_db"] = ref_psnr - r["psnr"]
    return rows
