"""Draw new samples from a trained VAE:
``python -m jobs.generate --checkpoint CKPT --output DIR --count 64``.

Writes ``DIR/samples/000000.png`` ... (one file per sample), ``DIR/samples.npy`` (all of them,
uint8) and ``DIR/grid.png`` (all of them in one picture, small samples enlarged pixel for
pixel). Runs in one process, on a GPU when there is one; the same ``--seed`` gives the same
samples.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import numpy as np

from jobs._cli import Parser, run_main, save_resolved
from pipeline.core import storage
from pipeline.data.grid import tile
from pipeline.data.outputs import npy, sample_file
from pipeline.model.checkpoint import load_checkpoint
from pipeline.train.generate import generate, sample_layout
from pipeline.workers.model_worker import pick_device

CONFIG = "generate.config.yaml"  # every option's final value, beside the output


def size_arg(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels, e.g. 64x64, got {text!r}") from err
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder from jobs.train")
    p.add_argument("--output", required=True, help="folder for the samples (path or URL)")
    p.add_argument("--count", type=int, default=64, help="samples to draw")
    p.add_argument(
        "--size",
        type=size_arg,
        help="conv VAE: sample size HxW in pixels (an MLP VAE's size is fixed by its input)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="prior standard deviation: below 1 gives tidier, less varied samples",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--columns", type=int, help="grid.png columns (default: near-square)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    layout = sample_layout(ckpt, args.size)
    samples = generate(ckpt, args.count, layout, args.seed, args.temperature, device=device)
    for i, x in enumerate(samples):
        ext, data = sample_file(x)
        storage.write_bytes(storage.join(args.output, "samples", f"{i:06d}.{ext}"), data)
    storage.write_bytes(storage.join(args.output, "samples.npy"), npy(samples))
    if samples.ndim >= 3:
        cols = args.columns or math.isqrt(len(samples) - 1) + 1
        zoom = max(1, 512 // (max(samples.shape[1:3]) * cols))  # small samples drawn large, pixel-exact
        big = samples.repeat(zoom, axis=1).repeat(zoom, axis=2)
        grid = tile(big, cols, gap=2, fill=255 if big.dtype == np.uint8 else 1.0)  # white between
        _, data = sample_file(grid)
        storage.write_bytes(storage.join(args.output, "grid.png"), data)
    save_resolved(args, storage.join(args.output, CONFIG))
    print(f"wrote {len(samples)} samples of shape {samples.shape[1:]} to {args.output}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
