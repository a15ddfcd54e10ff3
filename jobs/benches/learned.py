"""A learned codec trained for bytes against the ELBO VAE and the classic codecs, per sample.

Each rd model (pipeline.model.nets.rd) is trained from scratch on the demo's training crops for
the same optimiser steps and batch size as the demo photo VAE (the ELBO model of the "rd"
section), one per lambda, then codes the held-out crops through its own coder
(pipeline.data.rd_rows: rANS under the learned priors' tables). Bytes per crop are the
two streams' bytes (main + side), what a row of such an archive holds beyond its key and
framing; PSNR is of the decoded crops rounded to 8 bits. The ELBO model's points are the "rd"
section's vaezip curve (its archive bytes per row, keys and shapes included: a few bytes a
row more than streams alone), JPEG and WebP per crop as there.

Coder speed: the entropy coding alone, one thread, in MB a second of streams and of codes (a
latent value counted as a byte, as the rans codec's figures are): encode is the rANS coding
of given latents and indexes; decode includes the hyper-synthesis in float64 that picks each
latent's table.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch

from jobs.benches import rd as rd_bench
from jobs.benches.latents import psnr
from pipeline.codec.learned import decode_streams, encode_rows
from pipeline.data.rd_rows import RDCoder
from pipeline.model.checkpoint import Checkpoint
from pipeline.model.nets import RDConfig, build_model
from pipeline.train.training import TrainSettings, evaluate_rd, train

LAMBDAS = (0.0018, 0.0067, 0.025)
FACTORIZED_LAMBDA = 0.0067
# the digits: (downsample factor, lambda), factorized prior; 1/8 (one 32-value latent a digit)
# for the low rates, 1/4 (2x2 positions) for the high ones
DIGITS_RUNS = ((8, 0.001), (8, 0.003), (8, 0.01), (4, 0.01), (4, 0.05))
PEER_SCRIPT = os.path.join(os.path.dirname(__file__), "compressai_peer.py")
LONG_LAMBDA = 0.0483  # CompressAI's quality 6: the longer training aims at WebP's PSNR
DIGITS_SPLIT = 1200  # trained on the first 1,200 digits, scored on the other 597


def _nchw(crops: np.ndarray) -> np.ndarray:
    """(N, H, W, C) or grey (N, H, W) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    crops = crops if crops.ndim == 4 else crops[..., None]
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


class _Known:
    """A hyperprior's side steps with their answers given (``encode_rows``/``decode_streams``
    then time the entropy coding alone)."""

    def __init__(self, z: np.ndarray, indexes: np.ndarray) -> None:
        self.z, self._indexes = z, indexes

    def side(self, y: np.ndarray) -> np.ndarray:
        return self.z

    def indexes(self, z: np.ndarray, height: int, width: int) -> np.ndarray:
        return self._indexes


def _coder_speed(coder: RDCoder, x: torch.Tensor, repeats: int = 15, copies: int = 20) -> dict:
    """Millions of codes (latent values) a second through the entropy coder alone, on
    ``copies`` copies of the rows (so a call's fixed cost does not count for much), the best
    of ``repeats`` (a shared host's other work only ever slows a repeat): encode is the coding
    of given latents and table indexes, decode the decoding of the streams given the indexes;
    the hyper-synthesis that picks the indexes is timed apart."""
    with torch.no_grad():
        y_t = coder.model.encode(x).mean
        y = np.tile(torch.round(y_t).numpy().astype(np.int64), (copies, 1, 1, 1))
        z = (
            np.tile(torch.round(coder.model.hyper_latent(y_t)).numpy().astype(np.int64), (copies, 1, 1, 1))
            if coder.model.hyper
            else None
        )
    n, m, h, w = y.shape
    enc, dec, hyper = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        known = _Known(z, coder._indexes(z.astype(np.float64), h, w)) if z is not None else None
        hyper.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        streams = encode_rows(y, coder.tables, known)
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_streams(streams, coder.tables, known, h, w)
        dec.append(time.perf_counter() - t0)
    values = y.size + (z.size if z is not None else 0)
    return {
        "encode_codes_mb_s": values / min(enc) / 1e6,
        "decode_codes_mb_s": values / min(dec) / 1e6,
        "hyper_synthesis_rows_s": n / min(hyper) if z is not None else None,
    }


def rd_point(model, heldout: np.ndarray, speed: bool = True) -> tuple[dict, list]:
    coder = RDCoder(model.eval())
    x = torch.from_numpy(_nchw(heldout))
    rows = coder.encode(x)
    back = coder.decode(rows, (heldout.shape[1], heldout.shape[2])).clamp(0, 1)
    back8 = np.round(back.numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8).reshape(heldout.shape)
    size = sum(len(r.stream) for r in rows) / len(rows)
    pixels = heldout.shape[1] * heldout.shape[2]
    point = {
        "bytes_per_sample": size,
        # one stream holds both: the side information's share is its code length under its prior
        "side_ideal_bytes_per_sample": evaluate_rd(model, x).z_bits / 8,
        "bpp": 8 * size / pixels,
        "psnr": psnr(back8, heldout),
        **(_coder_speed(coder, x) if speed else {}),
    }
    return point, rows


def add_gains(points: list[dict], elbo: list[dict]) -> None:
    """Each point's PSNR less the ELBO VAE's at the point's bytes (interpolated on its curve;
    None outside it), as ``gain_over_elbo_db``."""
    for p in points:
        at = rd_bench.psnr_at(elbo, p["bpp"])
        p["gain_over_elbo_db"] = None if at is None else p["psnr"] - at


def _trained(
    config: RDConfig,
    data: np.ndarray,
    steps: int | None,
    batch: int,
    lmbda: float,
    seconds: float | None = None,
    seed: int = 0,
) -> tuple:
    """A model of ``config`` trained from ``seed`` (its weights and its batches) for ``steps``
    steps (or ``seconds`` of wall time) of ``batch`` rows of ``data`` at ``lmbda``; with its
    steps, CPU and wall seconds."""
    torch.manual_seed(seed)
    model = build_model(config)
    settings = TrainSettings(
        epochs=10**6,
        max_steps=steps,
        max_seconds=seconds,
        batch_size=batch,
        objective="rd",
        lmbda=lmbda,
        val_fraction=0.0,
        seed=seed,
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    r = train(model, data, settings, torch.device("cpu"))
    spent = {"train_steps": r.steps, "train_cpu_s": time.process_time() - cpu0}
    return model, {**spent, "train_wall_s": time.perf_counter() - wall0}


MEANS = (  # what a seed's points are averaged over; the rest is the first seed's
    "bytes_per_sample",
    "side_ideal_bytes_per_sample",
    "side_bytes_per_sample",
    "bpp",
    "psnr",
    "train_steps",
    "train_cpu_s",
    "train_wall_s",
)


def mean_points(points: list[dict]) -> list[dict]:
    """One point per (prior, lambda): the mean over its seeds of bytes, bpp, PSNR and the
    training's cost (the rest, such as coder speeds, is the first seed's), with ``seeds`` and
    the seeds' lowest and highest PSNR and bytes. A 500-step model's PSNR moves by tenths of a
    dB with its seed, which on these flat curves is tens of percent in bytes at equal PSNR."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["prior"], p["lmbda"]), []).append(p)
    out = []
    for group in groups.values():
        mean = {k: v for k, v in group[0].items() if k != "seed"}
        mean.update({k: float(np.mean([p[k] for p in group])) for k in MEANS if k in group[0]})
        mean["seeds"] = len(group)
        for k in ("psnr", "bytes_per_sample"):
            mean[f"{k}_range"] = [min(p[k] for p in group), max(p[k] for p in group)]
        out.append(mean)
    return out


def compressai_points(
    python: str,
    train_crops: np.ndarray,
    heldout: np.ndarray,
    steps: int,
    batch: int,
    threads: int,
    seeds: int = 1,
) -> dict:
    """CompressAI's models trained for the same steps and batch on the same crops and scored on
    the same held-out crops, by ``python`` (an interpreter of its own: compressai_peer.py);
    the hyperprior's from each of ``seeds`` seeds, averaged as vaezip's are (``mean_points``;
    each seed's in ``seed_points``)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, name) for name in ("train.npy", "heldout.npy", "out.json")]
        np.save(paths[0], np.ascontiguousarray(train_crops))
        np.save(paths[1], np.ascontiguousarray(heldout))
        args = [paths[0], paths[1], str(steps), str(batch), str(threads), paths[2], str(seeds)]
        subprocess.run([python, PEER_SCRIPT, *args], check=True)
        with open(paths[2]) as f:
            peer = json.load(f)
    peer["seed_points"] = peer["points"]
    peer["points"] = mean_points(peer["points"])
    return peer


def compare(points: list[dict], others: dict[str, list[dict]], peer: dict | None) -> None:
    """Each point's bytes over each curve's at its PSNR (``x_<name>``, with ``x_<name>_bound``
    ">=" where that is a lower bound: ``rd.bpp_against``), and where CompressAI ran, over its
    model of the same prior (``x_compressai``) and its PSNR less CompressAI's at its bytes
    (``db_over_compressai``; None outside CompressAI's curve)."""
    for p in points:
        for name, curve in others.items():
            p[f"x_{name}"], p[f"x_{name}_bound"] = rd_bench.ratio_against(curve, p)
        if peer:
            curve = [c for c in peer["points"] if c["prior"] == p["prior"]]
            p["x_compressai"], p["x_compressai_bound"] = rd_bench.ratio_against(curve, p)
            at = rd_bench.psnr_at(curve, p["bpp"])
            p["db_over_compressai"] = None if at is None else p["psnr"] - at


def classic_ratios(point: dict, curves: dict[str, list[dict]]) -> dict:
    """The point's bytes over each classic codec's at its PSNR (``x_<name>``; interpolated),
    and over the best of them (``x_best``: the largest ratio, against the codec that needs the
    fewest bytes); ``x_<name>_bound`` ">=" where the ratio is a lower bound
    (``rd.bpp_against``); a codec that never reaches the PSNR does not compete there (None)."""
    out: dict = {}
    best, bound = None, "="
    for name, curve in curves.items():
        x, mark = rd_bench.ratio_against(curve, point)
        out[f"x_{name}"], out[f"x_{name}_bound"] = x, mark
        if x is not None and (best is None or x > best):
            best = x
        if x is not None and mark == ">=":
            bound = ">="
    out["x_best"], out["x_best_bound"] = best, bound
    return out


def measure_digits(
    digits: np.ndarray, elbo: Checkpoint, steps: int, batch: int, split: int = DIGITS_SPLIT, threads: int = 2
) -> dict:
    """rd models for the 8x8 digits (factorized prior, 32 latent channels at 1/8 or 1/4 of a
    side, width 32), each trained from scratch on the first ``split`` digits for the demo
    digits VAE's own steps and batch, and scored on the rest; against the demo digits VAE (the
    ELBO model, trained on all 1,797, these included) and JPEG/WebP per digit and tiled."""
    torch.set_num_threads(threads)
    data, heldout = _nchw(digits[:split]), digits[split:]
    points = []
    for factor, lmbda in DIGITS_RUNS:
        config = RDConfig(
            in_channels=1,
            prior="factorized",
            downsample_factor=factor,
            latent_channels=32,
            hidden_channels=32,
        )
        model, spent = _trained(config, data, steps, batch, lmbda)
        point, _ = rd_point(model, heldout, speed=False)
        points.append({"prior": "factorized", "factor": factor, "lmbda": lmbda, **spent, **point})
    classic = {
        "jpeg": rd_bench.classic_curve(heldout, "JPEG"),
        "webp": rd_bench.classic_curve(heldout, "WEBP"),
        "jpeg_tiled": rd_bench.tiled_curve(heldout, "JPEG"),
        "webp_tiled": rd_bench.tiled_curve(heldout, "WEBP"),
    }
    elbo_curve = rd_bench.vaezip_curve(elbo, heldout)
    for p in points:
        p.update(classic_ratios(p, classic))
        b = rd_bench.bpp_at(elbo_curve, p["psnr"])
        p["x_elbo"] = None if b is None else p["bpp"] / b
    add_gains(points, elbo_curve)
    return {
        "steps": steps,
        "batch": batch,
        "train_rows": split,
        "heldout_rows": len(heldout),
        "threads": threads,
        "points": points,
        "elbo": elbo_curve,
        **classic,
    }


def measure(
    train_crops: np.ndarray,
    heldout: np.ndarray,
    elbo: Checkpoint,
    steps: int,
    batch: int,
    threads: int = 2,
    minutes: float = 0.0,
    peer_python: str | None = None,
    seeds: int = 1,
) -> dict:
    """The rd models at the ELBO model's budget, and (``minutes`` > 0) one hyperprior model
    trained for that many minutes of wall time; against the ELBO VAE, WebP and JPEG, and
    (``peer_python``: an interpreter with CompressAI) CompressAI's models trained alike. Each
    hyperprior lambda is trained from ``seeds`` seeds and its point is their mean
    (``mean_points``; each seed's in ``seed_points``); the factorized prior from seed 0."""
    torch.set_num_threads(threads)
    data = _nchw(train_crops)
    runs = [("hyperprior", lm, s) for lm in LAMBDAS for s in range(seeds)]
    runs.append(("factorized", FACTORIZED_LAMBDA, 0))
    seed_points = []
    for prior, lmbda, seed in runs:
        config = RDConfig(in_channels=3, prior=prior)  # type: ignore[arg-type]
        model, spent = _trained(config, data, steps, batch, lmbda, seed=seed)
        point, _ = rd_point(model, heldout, speed=seed == 0)
        seed_points.append({"prior": prior, "lmbda": lmbda, "seed": seed, **spent, **point})
    points = mean_points(seed_points)
    longer = []
    if minutes:  # one model trained for longer, at the top of CompressAI's lambdas
        model, spent = _trained(RDConfig(in_channels=3), data, None, batch, LONG_LAMBDA, seconds=60 * minutes)
        point, _ = rd_point(model, heldout, speed=False)
        longer.append({"prior": "hyperprior", "lmbda": LONG_LAMBDA, "minutes": minutes, **spent, **point})
    others = {
        "elbo": rd_bench.vaezip_curve(elbo, heldout),
        "webp": rd_bench.classic_curve(heldout, "WEBP"),
        "jpeg": rd_bench.classic_curve(heldout, "JPEG"),
    }
    peer = (
        compressai_points(peer_python, train_crops, heldout, steps, batch, threads, seeds)
        if peer_python
        else None
    )
    compare(points + longer, others, peer)
    add_gains(points + longer, others["elbo"])
    return {
        "compressai": peer,
        "longer": longer,
        "steps": steps,
        "batch": batch,
        "train_rows": len(train_crops),
        "heldout_rows": len(heldout),
        "threads": threads,
        "seeds": seeds,
        "points": points,
        "seed_points": seed_points,
        **others,
    }
