"""Latent storage side by side: what latent caches store today against vaezip's quantizer.

All on the same samples and the same decoder: float32 latents (the reference), float16,
naive int8 (one range for the whole tensor, clipped at the 0.1/99.9 percentiles, 256 steps,
stored raw, as int8 latent datasets do), and vaezip's quantizer modes followed by its codec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.checkpoint import Checkpoint
from pipeline.codec import Codec, CodecConfig, CodecParams, row_bytes, train_dictionary
from pipeline.quantize import QuantizerConfig, calibrate, dequantize, quantize, stats_from_latents
from pipeline.samples import to_model


@dataclass(frozen=True)
class Latents:
    mean: np.ndarray       # (N, C, P)
    logvar: np.ndarray
    shape: tuple[int, ...]  # one sample's latent shape (C, ...)


@torch.inference_mode()
def encode(ckpt: Checkpoint, arrays: np.ndarray, batch: int = 256) -> Latents:
    x = torch.from_numpy(np.stack([to_model(a, ckpt.config)[0] for a in arrays]))
    means, logvars = [], []
    for i in range(0, len(x), batch):
        post = ckpt.model.encode(x[i: i + batch])
        means.append(post.mean.float().numpy())
        logvars.append(post.logvar.float().numpy())
    m, lv = np.concatenate(means), np.concatenate(logvars)
    shape = m.shape[1:]
    return Latents(m.reshape(len(m), shape[0], -1), lv.reshape(len(m), shape[0], -1), shape)


@torch.inference_mode()
def reconstruct(ckpt: Checkpoint, z: np.ndarray, shape: tuple[int, ...], originals: np.ndarray,
                batch: int = 256) -> np.ndarray:
    """(N, C, P) latents -> uint8 reconstructions in the originals' shape."""
    size = None if ckpt.config.kind == "mlp" else tuple(originals.shape[1:3])
    out = []
    for i in range(0, len(z), batch):
        zt = torch.from_numpy(np.ascontiguousarray(z[i: i + batch]).reshape(-1, *shape))
        x = ckpt.model.decode(zt.float(), size).float().clamp(0, 1).numpy()
        if x.ndim == 4:
            x = np.moveaxis(x, 1, -1)
        out.append(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out).reshape(originals.shape)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the per-sample PSNR (peak 255)."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(err, 1e-12))))


def vaezip_codes(lat: Latents, qconfig: QuantizerConfig, cconfig: CodecConfig = CodecConfig()
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Quantize as the encode job does (calibrated on these latents), compress per row.

    Returns (codes, dequantized latents, code bytes of all rows, dictionary bytes)."""
    pooled_m = lat.mean.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    pooled_v = lat.logvar.transpose(0, 2, 1).reshape(-1, lat.mean.shape[1])[:, :, None]
    q = calibrate(stats_from_latents(pooled_m, pooled_v), qconfig)
    codes, _ = quantize(lat.mean, q)
    rows = row_bytes(codes, cconfig.layout)
    dictionary = train_dictionary(rows[:2048], cconfig)
    codec = Codec(CodecParams(level=cconfig.level, layout=cconfig.layout, dictionary=dictionary))
    return codes, dequantize(codes, q), sum(len(f) for f in codec.compress(rows)), len(dictionary)


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
    rows = [{"store": "float32 latents", "bytes_per_sample": 4 * values, "psnr": ref_psnr},
            {"store": "float16 latents", "bytes_per_sample": 2 * values,
             "psnr": psnr(reconstruct(ckpt, lat.mean.astype(np.float16).astype(np.float32),
                                      lat.shape, arrays), arrays)},
            {"store": "naive int8 (clipped range, raw)", "bytes_per_sample": values,
             "psnr": psnr(reconstruct(ckpt, naive_int8(lat.mean), lat.shape, arrays), arrays)}]
    for name, qconfig in QUANTIZERS.items():
        _, deq, code_bytes, dict_bytes = vaezip_codes(lat, qconfig)
        rows.append({"store": f"vaezip {name}", "bytes_per_sample": code_bytes / n,
                     "dictionary_bytes": dict_bytes,
                     "psnr": psnr(reconstruct(ckpt, deq, lat.shape, arrays), arrays)})
    for r in rows:
        r["vs_float16_bytes"] = r["bytes_per_sample"] / (2 * values)
        r["psnr_loss_db"] = ref_psnr - r["psnr"]
    return rows
