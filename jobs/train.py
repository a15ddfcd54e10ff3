"""Train a VAE: ``python -m jobs.train --input DATA --output CKPT_DIR``.

Writes into the output folder: ``model.safetensors`` + ``config.json`` (the checkpoint the
encode and decode jobs load), ``report.json`` (validation ELBO, PSNR, KL per latent channel,
active channels), ``report.png`` (loss curves and reconstruction grids) and ``train_args.json``
(the resolved arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from jobs._cli import Parser, add_sample_shape, int_tuple, run_main
from pipeline.core import storage
from pipeline.core.errors import ConfigError
from pipeline.data.readers import ReadOptions
from pipeline.data.samples import SampleLayout
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.nets import VAE, ConvConfig, MLPConfig, ModelConfig, RDConfig, build_model, config_to_dict
from pipeline.model.nets.config import GDN_PARAMS, PRIORS
from pipeline.train.dataset import (
    RawSample,
    choose_range,
    input_shape_of,
    random_crops,
    read_samples,
    stack_for_model,
)
from pipeline.train.report import Grid, render
from pipeline.train.training import (
    OBJECTIVES,
    RDEvaluation,
    TrainSettings,
    evaluate,
    evaluate_rd,
    split,
    train,
)
from pipeline.workers.model_worker import pick_device

log = logging.getLogger("jobs.train")
GRID_COLUMNS = 10


def build_parser() -> Parser:
    p = Parser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input",
        required=True,
        help="dataset: file, folder, glob or fsspec URL "
        "(.npy/.npz shards or Parquet with image bytes or tensors)",
    )
    p.add_argument("--output", required=True, help="checkpoint folder to write (path or URL)")
    p.add_argument(
        "--eval-input",
        help="held-out dataset evaluated after training and shown "
        "in report.png (e.g. photos the model never saw)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        choices=("auto", "mlp", "conv", "rd"),
        default="auto",
        help="auto: rd with --objective rd, else conv for images of at least 16x16 pixels, else mlp",
    )
    m.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="elbo",
        help="elbo: a VAE trained on its evidence bound, its codes' rate chosen after training "
        "(--max-loss-db at encode); rd: a learned codec (--model rd) trained on "
        "--lmbda * 255^2 * MSE + bits per pixel, its entropy model learned with it",
    )
    m.add_argument(
        "--lmbda",
        type=float,
        default=TrainSettings().lmbda,
        help="rd: weight of distortion against rate (CompressAI's lambda: 0.0018 to 0.0483 span "
        "its quality levels 1 to 6); larger: more bytes, less error",
    )
    m.add_argument(
        "--prior",
        choices=PRIORS,
        default="hyperprior",
        help="rd: hyperprior (side information predicts each latent's scale) or factorized",
    )
    m.add_argument("--hidden-channels", type=int, default=64, help="rd: width of the transforms (N)")
    m.add_argument(
        "--gdn",
        choices=GDN_PARAMS,
        default="abs",
        help="rd: how GDN keeps its terms positive: abs (per-channel in effect: the cross terms "
        "start at 0 and get no gradient) or squared (Balle's and CompressAI's: they learn)",
    )
    m.add_argument(
        "--density-filters",
        type=int_tuple,
        default=(3, 3, 3),
        help="rd: hidden widths of the factorized prior's cumulative functions (CompressAI: 3,3,3,3)",
    )
    m.add_argument(
        "--latent", type=int, help="latent size: units (mlp, default 16) or channels (conv, default 8)"
    )
    m.add_argument("--hidden", type=int_tuple, default=(256, 128), help="mlp hidden widths")
    m.add_argument(
        "--downsample-factor",
        type=int,
        choices=(4, 8, 16),
        help="pixels per latent position along each side: conv 4 (default) or 8; rd 16 (default), "
        "or 4 or 8 for small images such as the 8x8 digits",
    )
    m.add_argument("--base-channels", type=int, default=32, help="conv: width of the first stage")
    m.add_argument(
        "--likelihood",
        choices=("gaussian", "bernoulli"),
        default="gaussian",
        help="p(x|z): gaussian for continuous data, bernoulli for binary data",
    )
    t = p.add_argument_group("training")
    d = TrainSettings()
    t.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training rows")
    t.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this much training time (wall time: what a run gets depends on the machine's load)",
    )
    t.add_argument(
        "--max-steps",
        type=int,
        help="stop after this many optimiser steps: the same training on any machine, however loaded",
    )
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per step")
    t.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    t.add_argument("--beta", type=float, default=d.beta, help="weight of the KL term")
    t.add_argument(
        "--warmup-steps",
        type=int,
        default=d.warmup_steps,
        help="steps over which the KL weight rises linearly from 0 to beta",
    )
    t.add_argument(
        "--val-fraction", type=float, default=d.val_fraction, help="share of rows held out for validation"
    )
    t.add_argument("--max-rows", type=int, help="train on at most this many rows")
    t.add_argument(
        "--crop",
        type=int,
        metavar="N",
        help="train on random NxN crops of the images (any sizes, at least N a side): one large "
        "photo or raster is enough data; the conv VAE then encodes whole images of any size",
    )
    t.add_argument(
        "--crops-per-image",
        type=int,
        metavar="K",
        help="--crop: crops taken from each image (default: enough to cover it about 4 times)",
    )
    t.add_argument("--seed", type=int, default=d.seed, help="random seed (weights, split, batches)")
    t.add_argument(
        "--workers",
        type=int,
        help="train data-parallel on this many Ray Train workers (one GPU each on a GPU cluster, else "
        "one CPU), streaming the input's shards (any input the encode reads, s3:// too) instead of "
        "reading a sample into memory; needs --max-steps; checkpoints under OUTPUT/_train, and a run "
        "started again with the same --output resumes from the latest",
    )
    t.add_argument("--checkpoint-every", type=int, default=100, help="--workers: steps between checkpoints")
    t.add_argument("--device", default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda")
    t.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default on a CPU: the CPUs free of the machine's load, at least 1; "
        "the count used is printed). torch's own default, one per core, oversubscribes a busy machine: "
        "the demo photo model got 17 steps in 3 minutes with it on a loaded 2-core machine, 129 with "
        "one thread",
    )
    r = p.add_argument_group("reading")
    r.add_argument("--array-key", help=".npz: the array that holds the samples")
    add_sample_shape(r)
    r.add_argument(
        "--value-range",
        default="auto",
        metavar="auto|LO,HI",
        help="the data's units the model's 0..1 stands for, recorded in the checkpoint: auto = the "
        "dtype's range for 8/16-bit integers (0..65535 for a 16-bit scan), 0..1 for floats within "
        "it, else the training sample's extent (metres, kelvin, ...)",
    )
    r.add_argument(
        "--range-margin",
        type=float,
        default=0.0,
        metavar="F",
        help="auto range: widen the data's extent by F of its span on each side (e.g. 0.1 for data to "
        "come that may reach a little further)",
    )
    r.add_argument("--column", help="Parquet: the column that holds the samples")
    return p


def model_config(args: argparse.Namespace, samples: list[RawSample]) -> ModelConfig:
    shape = input_shape_of(samples)
    sample = samples[0].array
    kind = args.model
    if kind == "auto" and args.objective == "rd":
        kind = "rd"
    if kind == "auto":
        kind = "conv" if sample.ndim in (2, 3) and min(sample.shape[:2]) >= 16 else "mlp"
    if (kind == "rd") != (args.objective == "rd"):
        raise ConfigError("--model rd trains on --objective rd, and --objective rd needs --model rd")
    if kind == "rd":
        if sample.ndim not in (2, 3) or shape["in_channels"] not in (1, 3):
            raise ConfigError(f"the rd model needs (H, W) or (H, W, 1|3) images, samples are {sample.shape}")
        return RDConfig(
            in_channels=shape["in_channels"],
            latent_channels=args.latent or 96,
            hidden_channels=args.hidden_channels,
            prior=args.prior,
            downsample_factor=args.downsample_factor or 16,
            gdn=args.gdn,
            density_filters=args.density_filters,
        )
    if kind == "mlp":
        return MLPConfig(
            input_dim=shape["input_dim"],
            latent_dim=args.latent or 16,
            hidden_dims=args.hidden,
            likelihood=args.likelihood,
        )
    if shape["in_channels"] not in (1, 3):
        raise ConfigError(f"conv model needs (H, W) or (H, W, 1|3) images, samples are {sample.shape}")
    return ConvConfig(
        in_channels=shape["in_channels"],
        latent_channels=args.latent or 8,
        downsample_factor=args.downsample_factor or 4,
        base_channels=args.base_channels,
        likelihood=args.likelihood,
    )


def free_cpus(cpus: int, load: float) -> int:
    """Torch threads for training on a CPU: the CPUs this process may use less the machine's
    load (its 1-minute average), at least one. Measured on the demo photo model, 2 cores: on an
    idle machine 2 threads ran 2.0x the steps of 1 (120 steps in 43 s against 87); on a busy one
    torch's default of one a core got 17 steps in 3 minutes where one thread got 129."""
    return max(1, min(cpus, cpus - int(load + 0.5)))


@torch.no_grad()
def grid(model: VAE, title: str, data: np.ndarray, layout: SampleLayout, device: torch.device) -> Grid:
    x = torch.from_numpy(data[:GRID_COLUMNS]).to(device)
    size = (x.shape[-2], x.shape[-1]) if x.dim() == 4 else None
    latent = model.encode(x).mean
    if isinstance(model.config, RDConfig):  # what its coder stores: the rounded latents
        latent = torch.round(latent)
    x_hat = model.decode(latent, size).reshape(x.shape).clamp(0, 1).cpu().numpy()
    return Grid(title, [layout.restore(v) for v in data[:GRID_COLUMNS]], [layout.restore(v) for v in x_hat])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        beta=args.beta,
        warmup_steps=args.warmup_steps,
        val_fraction=args.val_fraction,
        seed=args.seed,
        objective=args.objective,
        lmbda=args.lmbda,
    )
    device = pick_device(args.device)
    if args.workers is not None:
        return train_streamed(args, settings, device)
    threads = args.threads or (
        free_cpus(len(os.sched_getaffinity(0)), os.getloadavg()[0])
        if device.type == "cpu"
        else torch.get_num_threads()
    )
    torch.set_num_threads(threads)
    options = ReadOptions(array_key=args.array_key, column=args.column, array_samples=args.sample_shape)
    samples = read_samples(args.input, options, args.max_rows)
    chosen = choose_range(args.value_range, samples, args.range_margin)  # the whole images, not crops
    value_range = chosen.value_range
    if args.crop:
        samples = random_crops(samples, args.crop, args.crops_per_image, args.seed)
    config = model_config(args, samples)
    data, layout = stack_for_model(samples, config, value_range)
    log.info("value range %s: %s", layout.range, chosen.why)
    del samples
    log.info(
        "training %s on %d rows of shape %s %s (values %s -> 0..1) from %s (device %s, %d torch thread%s)",
        config.kind,
        len(data),
        layout.shape,
        layout.dtype,
        layout.range,
        args.input,
        device,
        threads,
        "" if threads == 1 else "s",
    )
    torch.manual_seed(args.seed)
    model = build_model(config)
    train_rows = len(split(len(data), settings.val_fraction, settings.seed)[0])
    # The bar's total never moves: the steps to take, or (with --max-minutes) the seconds.
    timed = settings.max_seconds is not None
    total = settings.max_seconds if timed else settings.total_steps(train_rows)
    with tqdm(desc="train", total=total, unit="s" if timed else "step", dynamic_ncols=True) as bar:
        started = time.perf_counter()

        def on_step(step: int, steps: int, loss: float) -> None:
            bar.update(min(time.perf_counter() - started, bar.total) - bar.n if timed else 1)
            bar.set_postfix(step=step, loss=f"{loss:.2f}", refresh=False)

        result = train(model, data, settings, device, on_step)

    train_idx, val_idx = split(len(data), settings.val_fraction, settings.seed)
    if len(val_idx):
        grids = [grid(model, "validation split", data[np.sort(val_idx)], layout, device)]
    else:  # --val-fraction 0: the figures below are the training rows' own
        grids = [grid(model, "training rows (no validation split)", data[np.sort(train_idx)], layout, device)]
    report = {
        "model": config_to_dict(config),
        "device": str(device),
        "input": args.input,
        "train_rows": result.train_rows,
        "val_rows": result.val_rows,
        "epochs": result.epochs,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "validation": dataclasses.asdict(result.evaluation),
        "history": result.history,
    }
    if args.eval_input:
        held = read_samples(args.eval_input, options)
        if args.crop:
            held = random_crops(held, args.crop, args.crops_per_image, args.seed + 1)
        held_data, held_layout = stack_for_model(held, config, value_range)
        held_x = torch.from_numpy(held_data).to(device)
        held_ev = (
            evaluate_rd(model, held_x)
            if args.objective == "rd"
            else evaluate(model, held_x, seed=settings.seed)
        )
        report["held_out"] = {"input": args.eval_input, "rows": len(held_data), **dataclasses.asdict(held_ev)}
        step = max(1, len(held_data) // GRID_COLUMNS)
        grids.append(grid(model, f"held out: {args.eval_input}", held_data[::step], held_layout, device))

    fingerprint = save_checkpoint(
        model.cpu(),
        args.output,
        training={
            "input": args.input,
            "rows": len(data),
            "seed": args.seed,
            "sample_shape": list(layout.shape),
            "sample_dtype": layout.dtype,
        },
        value_range=value_range,
    )
    report["fingerprint"] = fingerprint
    storage.write_bytes(storage.join(args.output, "report.json"), json.dumps(report, indent=2).encode())
    storage.write_bytes(storage.join(args.output, "report.png"), render(result.history, grids))
    storage.write_bytes(
        storage.join(args.output, "train_args.json"), json.dumps(vars(args), indent=2, default=list).encode()
    )
    ev = result.evaluation
    if isinstance(ev, RDEvaluation):
        side = ev.z_bits / max(ev.y_bits + ev.z_bits, 1e-9)
        ho: dict = report.get("held_out") or {}
        print(
            f"trained rd codec ({args.prior}, lambda {args.lmbda:g}) in {result.seconds:.1f} s "
            f"({result.steps} steps): {'val' if result.val_rows else 'training-rows'} "
            f"{ev.bpp:.3f} bits/pixel ({side:.0%} side information), PSNR {ev.psnr_db:.2f} dB at the "
            f"rounded latents, {ev.active_channels}/{len(ev.bits_per_channel)} channels used"
            + (f"; held-out {ho['bpp']:.3f} bits/pixel, PSNR {ho['psnr_db']:.2f} dB" if ho else "")
            + f"\ncheckpoint {args.output} (sha256 {fingerprint[:12]})"
        )
        return 0
    if ev.active_channels == 0:
        print(
            f"training failed: 0 of {len(ev.kl_per_channel_nats)} latent channels carry information "
            f"(the model outputs one mean image whatever the input; PSNR {ev.psnr_db:.2f} dB on values "
            f"{layout.range}); try a --value-range that fits the data, a smaller --beta or more steps "
            f"(checkpoint {args.output} written for inspection)",
            file=sys.stderr,
        )
        return 1
    print(
        f"trained {config.kind} VAE in {result.seconds:.1f} s ({result.steps} steps): "
        f"{'val' if result.val_rows else 'training-rows'} ELBO {ev.elbo_nats:.2f} nats, "
        f"PSNR {ev.psnr_db:.2f} dB, "
        f"active channels {ev.active_channels}/{len(ev.kl_per_channel_nats)}"
        + (f"; held-out PSNR {report['held_out']['psnr_db']:.2f} dB" if "held_out" in report else "")
        + (
            "\n  (--crop: the validation crops overlap the training crops of the same images, so their "
            "PSNR flatters; judge the model by --eval-input, or by encoding whole images)"
            if args.crop and result.val_rows
            else ""
        )
        + f"\ncheckpoint {args.output} (sha256 {fingerprint[:12]})"
    )
    return 0


def train_streamed(args: argparse.Namespace, settings: TrainSettings, device: torch.device) -> int:
    """``--workers N``: data-parallel training on Ray Train, streaming the input's shards; the
    model's shape and the value range come from a small sample of it, the figures from
    ``--eval-input`` (else that sample)."""
    from pipeline.run.trainer import fit
    from pipeline.train.stream import WEIGHTS, StreamSpec, worker_loop

    if not settings.max_steps:
        raise ConfigError("--workers trains for a number of steps: give --max-steps")
    options = ReadOptions(array_key=args.array_key, column=args.column, array_samples=args.sample_shape)
    sample = read_samples(args.input, options, min(args.max_rows or 256, 256))
    chosen = choose_range(args.value_range, sample, args.range_margin)
    if args.crop:
        sample = random_crops(sample, args.crop, args.crops_per_image, args.seed)
    config = model_config(args, sample)
    spec = StreamSpec(
        input=args.input,
        model=config_to_dict(config),
        settings=settings,
        read=options,
        value_range=(chosen.value_range.lo, chosen.value_range.hi) if chosen.value_range else None,
        crop=args.crop,
        crops_per_image=args.crops_per_image,
        checkpoint_every=args.checkpoint_every,
    )
    started = time.perf_counter()
    folder, metrics = fit(
        worker_loop, spec, args.workers, storage.join(args.output, "_train"), "train", device.type == "cuda"
    )
    seconds = time.perf_counter() - started
    model = build_model(config)
    model.load_state_dict(load_file(os.path.join(folder, WEIGHTS)))
    model.eval()
    held = read_samples(args.eval_input, options) if args.eval_input else sample
    held_data, _ = stack_for_model(held, config, chosen.value_range)
    x = torch.from_numpy(held_data)
    ev = evaluate_rd(model, x) if args.objective == "rd" else evaluate(model, x, seed=settings.seed)
    in_sync = metrics.get("digest") == metrics.get("digest")  # NaN where the workers' weights differed
    report = {
        "model": config_to_dict(config),
        "input": args.input,
        "workers": args.workers,
        "steps": metrics.get("step"),
        "resumed_from": metrics.get("resumed_from"),
        "workers_in_sync": in_sync,
        "train_seconds": round(seconds, 2),
        "evaluated_on": args.eval_input or f"{len(held)} rows of {args.input}",
        "evaluation": dataclasses.asdict(ev),
    }
    fingerprint = save_checkpoint(
        model,
        args.output,
        training={
            "input": args.input,
            "seed": args.seed,
            "workers": args.workers,
            "steps": metrics.get("step"),
        },
        value_range=chosen.value_range,
    )
    report["fingerprint"] = fingerprint
    storage.write_bytes(storage.join(args.output, "report.json"), json.dumps(report, indent=2).encode())
    if not in_sync:
        print("training failed: the workers' weights differ (data-parallel sync broke)", file=sys.stderr)
        return 1
    resumed = f", resumed from step {metrics['resumed_from']}" if metrics.get("resumed_from") else ""
    print(
        f"trained {config.kind} on {args.workers} worker(s) in {seconds:.1f} s ({metrics.get('step')} steps"
        f"{resumed}; weights in sync on every worker): PSNR {ev.psnr_db:.2f} dB on {report['evaluated_on']}"
        f"\ncheckpoint {args.output} (sha256 {fingerprint[:12]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))


def cli() -> None:
    """Console entry point ``vaezip-train``."""
    sys.exit(run_main(main))
