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

from pipeline.codec.codec import Codec, CodecConfig, CodecParams, calibrate_codec, latent_width
from pipeline.codec.format import BASE_NAMES, ArchiveMeta, ArchiveWriter, CodeRows
from pipeline.codec.quantize import (
    QuantizerConfig,
    QuantizerParams,
    calibrate,
    dequantize,
    quantize,
    stats_from_latents,
)
from pipeline.codec.ratecontrol import Rows, calibrate_loss
from pipeline.core.names import sample_key
from pipeline.data.samples import to_model
from pipeline.model.checkpoint import Checkpoint
from pipeline.model.nets import config_to_dict
from pipeline.model.precision import autocast, pick_dtype


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


def sse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2))


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
    dictionary_bytes: int  # row framing's shared dictionary (rans: its model), once per file (footer)
    row_bytes: int  # the archive file less its footer: codes, keys, checksums, shapes
    footer_bytes: int  # once per file: schema, row-group index, metadata JSON
    quantizer: QuantizerParams
    codec: CodecParams


def model_rows(ckpt: Checkpoint, lat: Latents, arrays: np.ndarray, batch: int = 256) -> Rows:
    """The rows as rate control sees them: model inputs, latents, and the decoder (0..1)."""
    x = np.stack([to_model(a, ckpt.config)[0] for a in arrays])
    size = None if ckpt.config.kind == "mlp" else tuple(arrays.shape[1:3])

    @torch.inference_mode()
    def decode(z: np.ndarray) -> np.ndarray:
        parts = []
        for i in range(0, len(z), batch):
            zt = torch.from_numpy(np.ascontiguousarray(z[i : i + batch], dtype=np.float32))
            parts.append(ckpt.model.decode(zt, size).float().clamp(0, 1).numpy())
        return np.concatenate(parts)

    return Rows(x, lat.mean.reshape(len(arrays), *lat.shape), decode)


def quantizer(lat: Latents, qconfig: QuantizerConfig, rows: Rows | None = None) -> QuantizerParams:
    """Calibrated as the encode job calibrates (loss mode needs the rows and their decoder)."""
    pooled_m = lat.mean.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    pooled_v = lat.logvar.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    q = calibrate(stats_from_latents(pooled_m, pooled_v), qconfig)
    if qconfig.mode == "loss":
        assert rows is not None
        q = calibrate_loss([rows], qconfig.max_loss_db, np.asarray(q.active))
    return q


def vaezip_codes(
    ckpt: Checkpoint,
    lat: Latents,
    arrays: np.ndarray,
    qconfig: QuantizerConfig,
    cconfig: CodecConfig = CodecConfig(),
    rows: Rows | None = None,
) -> Stored:
    """Quantize as the encode job does (calibrated on these latents) and write the rows into a
    real archive file in memory, with the ArchiveWriter the job uses."""
    if rows is None and qconfig.mode == "loss":
        rows = model_rows(ckpt, lat, arrays)
    q = quantizer(lat, qconfig, rows)
    codes, _ = quantize(lat.mean, q)
    return store(ckpt, lat, arrays, codes, q, cconfig)


def store(
    ckpt: Checkpoint,
    lat: Latents,
    arrays: np.ndarray,
    codes: np.ndarray,
    q: QuantizerParams,
    cconfig: CodecConfig,
) -> Stored:
    """``codes`` (quantized by ``q``) written with the codec ``cconfig`` calibrates on them:
    the same codes under another codec need no second quantizer calibration."""
    cparams = calibrate_codec([codes[:2048]], cconfig, [latent_width(lat.shape)])
    code_bytes, file_bytes, footer = archive_bytes(ckpt, codes, q, cparams, lat.shape, arrays)
    return Stored(
        codes,
        dequantize(codes, q),
        code_bytes,
        len(cparams.dictionary) + len(cparams.model),
        file_bytes - footer,
        footer,
        q,
        cparams,
    )


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
    payloads, crcs = Codec(cparams).encode(codes, latent_width(latent_shape))
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
    "loss, 0.1 dB (default)": QuantizerConfig(),
    "posterior, step 0.5 sigma": QuantizerConfig(mode="posterior", step_sigmas=0.5),
    "posterior, step 1 sigma": QuantizerConfig(mode="posterior", step_sigmas=1.0),
    "posterior, step 2 sigma": QuantizerConfig(mode="posterior", step_sigmas=2.0),
    "affine, 8 bits": QuantizerConfig(mode="affine", bits=8),
    "affine, 6 bits": QuantizerConfig(mode="affine", bits=6),
}


# the rate-distortion sweep of --max-loss-db, in dB
LOSS_TARGETS = (0.02, 0.05, 0.2, 0.5, 1.0)  # and the default, 0.1


def compare(ckpt: Checkpoint, arrays: np.ndarray, targets: tuple[float, ...] = LOSS_TARGETS) -> list[dict]:
    lat = encode(ckpt, arrays)
    mrows = model_rows(ckpt, lat, arrays)
    n, values = len(arrays), lat.mean[0].size
    ref = reconstruct(ckpt, lat.mean, lat.shape, arrays)
    ref_psnr, ref_sse = psnr(ref, arrays), sse(ref, arrays)
    f16 = reconstruct(ckpt, lat.mean.astype(np.float16).astype(np.float32), lat.shape, arrays)
    i8 = reconstruct(ckpt, naive_int8(lat.mean), lat.shape, arrays)
    rows = [
        {"store": "float32 latents", "bytes_per_sample": 4 * values, "psnr": ref_psnr, "sse": ref_sse},
        {
            "store": "float16 latents",
            "bytes_per_sample": 2 * values,
            "psnr": psnr(f16, arrays),
            "sse": sse(f16, arrays),
        },
        {
            "store": "naive int8 (clipped range, raw)",
            "bytes_per_sample": values,
            "psnr": psnr(i8, arrays),
            "sse": sse(i8, arrays),
        },
    ]
    configs = dict(QUANTIZERS)
    configs.update({f"loss, {d:g} dB": QuantizerConfig(mode="loss", max_loss_db=d) for d in targets})
    for name, qconfig in configs.items():
        st = vaezip_codes(ckpt, lat, arrays, qconfig, rows=mrows)
        y = reconstruct(ckpt, st.latents, lat.shape, arrays)
        q = st.quantizer if qconfig.mode == "loss" else None
        rows.append(
            {
                "store": f"vaezip {name}",
                "mode": qconfig.mode,
                "target_loss_db": qconfig.max_loss_db if qconfig.mode == "loss" else None,
                "reported_loss_db": q.measured_loss_db if q else None,
                "bits_per_value": q.bits_per_value if q else None,
                "max_levels": int(st.codes.max()) + 1,
                "bytes_per_sample": st.row_bytes / n,
                "footer_bytes": st.footer_bytes,
                "code_bytes_per_sample": st.code_bytes / n,
                "psnr": psnr(y, arrays),
                "sse": sse(y, arrays),
            }
        )
        if qconfig.mode == "loss" and len(lat.shape) > 1:
            rows.append(_with_rans(ckpt, st, lat, arrays, rows[-1]))
    for r in rows:
        r["vs_float16_bytes"] = r["bytes_per_sample"] / (2 * values)
        r["psnr_loss_db"] = ref_psnr - r["psnr"]
        # the job's own measure: the PSNR drop of the pooled error, over every row
        r["pooled_loss_db"] = 10 * np.log10(max(r.pop("sse"), 1e-30) / max(ref_sse, 1e-30))
    return rows


def _with_rans(ckpt: Checkpoint, st: Stored, lat: Latents, arrays: np.ndarray, row: dict) -> dict:
    """``row``'s codes (the same latents, so the same PSNR) stored with ``--codec rans``."""
    rans = store(ckpt, lat, arrays, st.codes, st.quantizer, CodecConfig(name="rans"))
    n = len(arrays)
    return {
        **row,
        "store": f"{row['store']}, --codec rans",
        "codec": "rans",
        "bytes_per_sample": rans.row_bytes / n,
        "footer_bytes": rans.footer_bytes,
        "code_bytes_per_sample": rans.code_bytes / n,
    }


def precision_psnr(ckpt: Checkpoint, arrays: np.ndarray, precision: str = "bf16") -> dict:
    """Decoded PSNR with encoder and decoder at float32 and at ``precision`` (torch.autocast
    on this machine's device), the latents not quantized: what the precision alone costs."""
    cpu = torch.device("cpu")
    out = {}
    for name in ("fp32", precision):
        with autocast(cpu, pick_dtype(name, cpu)):
            lat = encode(ckpt, arrays)
            out[name] = psnr(reconstruct(ckpt, lat.mean, lat.shape, arrays), arrays)
    return {
        "fp32_psnr": out["fp32"],
        f"{precision}_psnr": out[precision],
        "difference_db": out["fp32"] - out[precision],
    }
