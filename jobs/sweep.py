"""Choose the latent size from evidence: train a few latent sizes on a sample and measure each
at several quantizer steps, as the archive would store it:
``python -m jobs.sweep --input DATA --latents 4,8,16 --output SWEEP``; or, for a learned codec,
one rd model per lambda: ``python -m jobs.sweep --input DATA --objective rd --lmbdas
0.0018,0.0067,0.025 --output SWEEP`` (checkpoints ``SWEEP/lmbda-<lambda>/``, each measured
through its own coder).

Writes ``SWEEP/sweep.json`` (a row per latent size and step: bytes per sample in the real
archive format, bits per pixel, PSNR), ``SWEEP/sweep.png`` (the rate-distortion curves, one per
latent size) and ``SWEEP/latent-<n>/`` (each trained checkpoint, ready for ``jobs.encode``).
Measured on ``--eval-input`` when given (data training never saw), else on the validation
split. Takes every ``jobs.train`` option (epochs, model, ...); ``--latent`` is replaced by
``--latents``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from jobs import train as train_job  # noqa: E402
from jobs._cli import Parser, float_tuple, int_tuple, run_main  # noqa: E402
from jobs.benches.latents import encode, psnr, reconstruct, vaezip_codes  # noqa: E402
from pipeline.codec.quantize import QuantizerConfig  # noqa: E402
from pipeline.core import storage  # noqa: E402
from pipeline.data.rd_rows import RDCoder  # noqa: E402
from pipeline.data.readers import ReadOptions  # noqa: E402
from pipeline.model.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from pipeline.model.nets import build_model  # noqa: E402
from pipeline.train.dataset import RawSample, read_samples, stack_for_model  # noqa: E402
from pipeline.train.training import TrainSettings, split, train  # noqa: E402
from pipeline.workers.model_worker import pick_device  # noqa: E402

log = logging.getLogger("jobs.sweep")


def build_parser() -> Parser:
    p = train_job.build_parser()
    p.prog, p.description = "python -m jobs.sweep", __doc__.split("\n\n")[0]
    for action in p._actions:
        if action.dest == "output":
            action.help = "folder for sweep.json, sweep.png and one checkpoint per latent size"
        if action.dest == "latent":
            action.help = "(not used by the sweep: see --latents)"
    p.add_argument(
        "--latents",
        type=int_tuple,
        default=(4, 8, 16),
        help="latent sizes to train: units (mlp) or channels (conv), comma-separated",
    )
    p.add_argument(
        "--lmbdas",
        type=float_tuple,
        default=(0.0018, 0.0067, 0.025),
        help="--objective rd: the lambdas to train, one rd model each, comma-separated",
    )
    p.add_argument(
        "--step-sigmas",
        type=float_tuple,
        default=(0.5, 1.0, 2.0, 4.0),
        help="quantizer steps to measure, in posterior sigmas, comma-separated",
    )
    return p


def plot(rows: list[dict], uri: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for latent in sorted({r["latent"] for r in rows}):
        pts = sorted((r["bytes_per_sample"], r["psnr"]) for r in rows if r["latent"] == latent)
        label = f"latent {latent}" if not any("lmbda" in r for r in rows) else f"rd, {latent} channels"
        ax.plot([b for b, _ in pts], [p for _, p in pts], "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("archive bytes per sample")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes(uri, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = ReadOptions(array_key=args.array_key, column=args.column)
    samples = read_samples(args.input, options, args.max_rows)
    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        learning_rate=args.lr,
        beta=args.beta,
        warmup_steps=args.warmup_steps,
        val_fraction=args.val_fraction,
        seed=args.seed,
        max_steps=args.max_steps,
        objective=args.objective,
    )
    if args.eval_input:
        originals = np.stack([s.array for s in read_samples(args.eval_input, options)])
        measured_on = args.eval_input
    else:
        _, val_idx = split(len(samples), settings.val_fraction, settings.seed)
        originals = np.stack([samples[i].array for i in np.sort(val_idx)])
        measured_on = "validation split"
    pixels = originals[0].shape[0] * (originals[0].shape[1] if originals.ndim > 2 else 1)
    if args.objective == "rd":
        rows = rd_sweep(args, samples, originals, settings, device, pixels)
        return report(args, rows, measured_on, originals)
    rows = []
    for latent in args.latents:
        args.latent = latent
        config = train_job.model_config(args, samples)
        data, _ = stack_for_model(samples, config)
        torch.manual_seed(args.seed)
        model = build_model(config)
        result = train(model, data, settings, device)
        model = model.cpu().eval()
        fingerprint = save_checkpoint(
            model,
            storage.join(args.output, f"latent-{latent}"),
            training={"input": args.input, "sweep": True},
        )
        ckpt = Checkpoint(model=model, config=config, fingerprint=fingerprint, uri="")
        lat = encode(ckpt, originals)
        reference = psnr(reconstruct(ckpt, lat.mean, lat.shape, originals), originals)
        for step in args.step_sigmas:
            st = vaezip_codes(ckpt, lat, originals, QuantizerConfig(mode="posterior", step_sigmas=step))
            back = reconstruct(ckpt, st.latents, lat.shape, originals)
            per = st.row_bytes / len(originals)
            rows.append(
                {
                    "latent": latent,
                    "step_sigmas": step,
                    "bytes_per_sample": per,
                    "bpp": 8 * per / pixels,
                    "psnr": psnr(back, originals),
                    "psnr_unquantized": reference,
                    "train_seconds": result.seconds,
                    "active_channels": result.evaluation.active_channels,
                }
            )
            log.info(
                "latent %d, step %.2g sigma: %.1f bytes/sample, %.2f dB", latent, step, per, rows[-1]["psnr"]
            )
    return report(args, rows, measured_on, originals)


def rd_sweep(
    args: argparse.Namespace,
    samples: list,
    originals: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    pixels: int,
) -> list[dict]:
    """One rd model per lambda, each measured through its own coder: the streams' bytes a
    sample and the PSNR of what they decode to."""
    rows = []
    for lmbda in args.lmbdas:
        args.lmbda = lmbda
        config = train_job.model_config(args, samples)
        data, _ = stack_for_model(samples, config)
        held, _ = stack_for_model([RawSample("eval", i, o) for i, o in enumerate(originals)], config)
        torch.manual_seed(args.seed)
        model = build_model(config)
        result = train(model, data, dataclasses.replace(settings, lmbda=lmbda), device)
        model = model.cpu().eval()
        name = f"lmbda-{lmbda:g}"
        save_checkpoint(model, storage.join(args.output, name), training={"input": args.input, "sweep": True})
        coder = RDCoder(model)  # type: ignore[arg-type]
        x = torch.from_numpy(held)
        coded = coder.encode(x)
        back = coder.decode(coded, (x.shape[-2], x.shape[-1])).clamp(0, 1).numpy()
        back8 = np.rint(np.moveaxis(back, 1, -1) * 255).astype(np.uint8).reshape(originals.shape)
        per = sum(len(r.stream) for r in coded) / len(coded)
        rows.append(
            {
                "latent": config.latent_channels,  # type: ignore[union-attr]
                "lmbda": lmbda,
                "checkpoint": name,
                "bytes_per_sample": per,
                "bpp": 8 * per / pixels,
                "psnr": psnr(back8, originals),
                "train_seconds": result.seconds,
                "active_channels": result.evaluation.active_channels,
            }
        )
        log.info("lambda %g: %.1f bytes/sample, %.2f dB", lmbda, per, rows[-1]["psnr"])
    return rows


def report(args: argparse.Namespace, rows: list[dict], measured_on: str, originals: np.ndarray) -> int:
    storage.write_bytes(
        storage.join(args.output, "sweep.json"),
        json.dumps({"input": args.input, "measured_on": measured_on, "rows": rows}, indent=2).encode(),
    )
    plot(rows, storage.join(args.output, "sweep.png"))
    print(f"measured on {measured_on} ({len(originals)} samples)")
    if rows and "lmbda" in rows[0]:
        print(f"{'lambda':>8} {'bytes/sample':>13} {'bpp':>7} {'PSNR dB':>8} {'channels':>8}  checkpoint")
        for r in rows:
            print(
                f"{r['lmbda']:>8g} {r['bytes_per_sample']:>13.1f} {r['bpp']:>7.3f} {r['psnr']:>8.2f} "
                f"{r['active_channels']:>8}  {args.output}/{r['checkpoint']}"
            )
        print(f"curve: {args.output}/sweep.png")
        return 0
    print(
        f"{'latent':>6} {'step':>5} {'bytes/sample':>13} {'bpp':>7} {'PSNR dB':>8} "
        f"{'unquantized':>11} {'active':>6}"
    )
    for r in rows:
        print(
            f"{r['latent']:>6} {r['step_sigmas']:>5g} {r['bytes_per_sample']:>13.1f} "
            f"{r['bpp']:>7.3f} {r['psnr']:>8.2f} {r['psnr_unquantized']:>11.2f} "
            f"{r['active_channels']:>6}"
        )
    print(f"checkpoints: {args.output}/latent-<n>; curves: {args.output}/sweep.png")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
