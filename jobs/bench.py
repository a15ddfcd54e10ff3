"""Benchmarks: ``python -m jobs.bench`` (``make bench``) writes ``runs/bench/results.json``,
plots, and ``BENCHMARKS.md``.

Every comparison is measured side by side in one run, repeated where it is a speed, and
reported as a ratio with its spread. The models are the demo's (``make demo`` trains them).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import ray
import torch

from jobs._cli import Parser, run_main
from jobs.benches import agreement, sdlike, throughput
from jobs.benches import bombs as bomb_bench
from jobs.benches import cache as cache_bench
from jobs.benches import calibration as calibration_bench
from jobs.benches import codec as codec_bench
from jobs.benches import estimate as estimate_bench
from jobs.benches import gpu as gpu_bench
from jobs.benches import host as host_bench
from jobs.benches import latents as latent_bench
from jobs.benches import learned as learned_bench
from jobs.benches import memory as memory_bench
from jobs.benches import rd as rd_bench
from jobs.benches import scale as scale_bench
from jobs.benches import seams as seams_bench
from jobs.benches.common import load_arrays
from jobs.benches.report import SECTIONS, write_page, write_plots
from pipeline.codec.codec import CodecConfig, latent_width
from pipeline.codec.quantize import QuantizerConfig
from pipeline.data.demo_data import HELDOUT_PHOTOS, photo
from pipeline.model.checkpoint import Checkpoint, load_checkpoint


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def code_version() -> str | None:
    """The checkout's commit (with "+changes" when the tracked files differ from it), or
    None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/demo", help="folder written by jobs.prepare_demo")
    p.add_argument(
        "--digits-checkpoint",
        default="runs/digits-mlp",
        help="MLP VAE trained on the digits (make demo writes it)",
    )
    p.add_argument(
        "--photos-checkpoint",
        default="runs/photos-conv",
        help="conv VAE trained on photo crops (make demo writes it)",
    )
    p.add_argument(
        "--output",
        default="docs/bench",
        help="results.json and plots (kept in git, beside the page that shows them)",
    )
    p.add_argument("--page", default="BENCHMARKS.md", help="the page to regenerate")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each speed figure")
    p.add_argument("--rows", type=int, default=2048, help="photo crops in the speed runs")
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    p.add_argument(
        "--scale-shards",
        type=int,
        nargs="+",
        default=[1000, 10000, 100000],
        help="the scale section's shard counts on local disk",
    )
    p.add_argument(
        "--scale-s3-shards",
        type=int,
        nargs="*",
        default=[1000, 10000],
        help="... and against moto's S3 server (none: skip it)",
    )
    p.add_argument(
        "--learned-minutes",
        type=float,
        default=30.0,
        help="the learned section's longer training, in minutes of wall time (0: skip it)",
    )
    p.add_argument(
        "--learned-seeds",
        type=int,
        default=1,
        help="the learned section: train each hyperprior lambda (vaezip's and CompressAI's) from this "
        "many seeds and compare their means (a 500-step model's PSNR moves tenths of a dB with its seed)",
    )
    p.add_argument(
        "--compressai-python",
        help="the learned section: an interpreter with CompressAI installed (it pins numpy<2, so it "
        "lives apart), to train its models beside vaezip's; without it they are not measured",
    )
    p.add_argument(
        "--page-only",
        action="store_true",
        help="measure nothing: redraw the plots "
        "and the page from the existing results.json (after editing the notes)",
    )
    args = p.parse_args(argv)
    if args.page_only:
        with open(os.path.join(args.output, "results.json")) as f:
            saved = json.load(f)
        write_plots(saved, args.output)
        write_page(saved, args.page, args.output)
        print(f"wrote {args.page} from {args.output}/results.json")
        return 0
    sections = args.only or SECTIONS
    os.makedirs(args.output, exist_ok=True)
    results_path = os.path.join(args.output, "results.json")
    results: dict = {}
    if args.only and os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    results["machine"] = machine()
    results["date"] = datetime.date.today().isoformat()
    command = ("python -m jobs.bench " + " ".join(argv or sys.argv[1:])).strip()
    run = {"command": command, "date": results["date"], "commit": code_version()}
    for section in sections:  # which run produced each section's figures
        results.setdefault("sections", {})[section] = run
    digits_ck = load_checkpoint(args.digits_checkpoint)
    photos_ck = load_checkpoint(args.photos_checkpoint)
    heldout = load_arrays(f"{args.data}/photos/heldout")
    digits = load_arrays(f"{args.data}/digits")
    torch.set_num_threads(1)

    if "throughput" in sections or "memory" in sections:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    if "throughput" in sections:
        crops = load_arrays(f"{args.data}/photos/train", max_rows=args.rows)
        speed_dir = tempfile.mkdtemp(prefix="vzbench-data-")
        for i in range(4):  # four shards: two actors stay busy
            np.save(f"{speed_dir}/crops-{i}.npy", crops[i::4])
        results["throughput"] = [
            throughput.measure(
                "photo crops 64x64, conv VAE", args.photos_checkpoint, speed_dir, crops, 64, args.repeats
            )
        ]
        shutil.rmtree(speed_dir)
    if "memory" in sections:
        crops = load_arrays(f"{args.data}/photos/train", max_rows=512)
        results["memory"] = memory_bench.measure(args.photos_checkpoint, crops, 64)
    if ray.is_initialized():
        ray.shutdown()
    if "bombs" in sections:
        crops = load_arrays(f"{args.data}/photos/train", max_rows=64)
        results["bombs"] = bomb_bench.measure(args.photos_checkpoint, crops)
    if "codec" in sections:
        out = {}
        for name, ck, arrays in (("photos", photos_ck, heldout), ("digits", digits_ck, digits)):
            lat = latent_bench.encode(ck, arrays)
            default = CodecConfig()
            st = latent_bench.vaezip_codes(ck, lat, arrays, QuantizerConfig(), default)
            # the same codes under the other codecs (no second quantizer calibration)
            before, frames, rans = (
                latent_bench.store(ck, lat, arrays, st.codes, st.quantizer, c)
                for c in (
                    CodecConfig(layout="position", transform="none"),
                    CodecConfig(level=3, framing="row"),
                    CodecConfig(name="rans"),
                )
            )
            width = latent_width(lat.shape)
            out[name] = {
                "rows": len(arrays),
                "level": default.level,
                "layout": st.codec.layout,
                "vaezip_bytes": st.code_bytes,
                "vaezip_position_unfolded_bytes": before.code_bytes,
                "vaezip_row_frames_bytes": frames.code_bytes,
                "vaezip_dictionary_bytes": frames.dictionary_bytes,
                "rans_bytes": rans.code_bytes,
                "rans_model_bytes": rans.dictionary_bytes,
                "rans_speeds": codec_bench.rans_speeds(rans.codes, rans.codec, width, args.repeats),
                **codec_bench.entropy_bounds(st.codes.astype(np.int64), width),
                **codec_bench.coders(st.codes, st.codec.layout),
                "speeds": codec_bench.speeds(
                    st.codes, st.codec.layout, repeats=args.repeats, centers=st.codec.centers
                ),
            }
        results["codec"] = out
    if "latents" in sections:
        with tempfile.TemporaryDirectory(prefix="vzbench-sd-") as tmp:
            train = load_arrays(f"{args.data}/photos/train", max_rows=2048)
            sd_like = load_checkpoint(sdlike.train(train, tmp))
        results["latents"] = {
            "photos": latent_bench.compare(photos_ck, heldout),
            "digits": latent_bench.compare(digits_ck, digits),
            "SD-like (diffusers AutoencoderKL, photos)": latent_bench.compare(sd_like, heldout),
        }
    if "precision" in sections:
        results["precision"] = {
            "photos": latent_bench.precision_psnr(photos_ck, heldout),
            "digits": latent_bench.precision_psnr(digits_ck, digits),
        }
    if "host" in sections:
        crops = load_arrays(f"{args.data}/photos/train", max_rows=4096)
        results["host"] = host_bench.measure(args.photos_checkpoint, crops, (1, 2), args.repeats)
    if "gpu" in sections:
        results["gpu"] = gpu_bench.measure(args.photos_checkpoint, args.repeats)
    if "agreement" in sections:
        results["agreement"] = [
            agreement.measure(data, ck, d)
            for data, ck in (
                (f"{args.data}/digits", args.digits_checkpoint),
                (f"{args.data}/photos/train", args.photos_checkpoint),
            )
            for d in (0.1, 0.5)
        ]
    if "rd" in sections:
        results["rd"] = rd(photos_ck, heldout, digits_ck, digits, args.output)
    if "features" in sections:
        results["features"] = rd_bench.feature_probe(digits_ck, digits)
    if "estimate" in sections:
        t = (results.get("throughput") or [{}])[0]
        crops = load_arrays(f"{args.data}/photos/train", max_rows=64)
        results["estimate"] = estimate_bench.estimate(
            photos_ck,
            crops,
            t.get("bare_encode_rows_s", {}).get("median"),
            t.get("bare_decode_rows_s", {}).get("median"),
        )
    if "scale" in sections:
        results["scale"] = scale_bench.measure(args.scale_shards, args.scale_s3_shards)
    if "cache" in sections:
        train = load_arrays(f"{args.data}/photos/train", max_rows=2048)
        results["cache"] = cache_bench.measure(train, heldout, args.repeats)
    if "learned" in sections:
        # each domain's ELBO model's own steps and batch: the same budget for each rd model
        crops = load_arrays(f"{args.data}/photos/train")
        results["learned"] = learned_bench.measure(
            crops,
            heldout,
            photos_ck,
            *budget(args.photos_checkpoint),
            minutes=args.learned_minutes,
            peer_python=args.compressai_python,
            seeds=args.learned_seeds,
        )
        results["learned"]["digits"] = learned_bench.measure_digits(
            digits, digits_ck, *budget(args.digits_checkpoint)
        )
    if "calibration" in sections:
        results["calibration"] = calibration_bench.measure(
            {
                "photos (demo conv VAE)": (args.photos_checkpoint, f"{args.data}/photos/train"),
                "digits (demo MLP VAE)": (args.digits_checkpoint, f"{args.data}/digits"),
            }
        )
    if "seams" in sections:
        results["seams"] = seams_bench.measure(
            args.photos_checkpoint, {name: photo(name) for name in HELDOUT_PHOTOS}
        )
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    write_plots(results, args.output)
    write_page(results, args.page, args.output)
    print(f"wrote {results_path} and {args.page}")
    return 0


def budget(checkpoint: str) -> tuple[int, int]:
    """The optimiser steps and batch size a checkpoint was trained with."""
    with open(os.path.join(checkpoint, "report.json")) as f:
        steps = json.load(f)["steps"]
    with open(os.path.join(checkpoint, "train_args.json")) as f:
        return steps, json.load(f)["batch_size"]


def rd(
    photos_ck: Checkpoint, heldout: np.ndarray, digits_ck: Checkpoint, digits: np.ndarray, out: str
) -> dict:
    shown_photos: list = []
    shown_digits: list = []
    per_sample = {
        "vaezip": rd_bench.vaezip_curve(photos_ck, heldout, shown=shown_photos),
        "jpeg": rd_bench.classic_curve(heldout, "JPEG"),
        "webp": rd_bench.classic_curve(heldout, "WEBP"),
    }
    whole: dict[str, list] = {"vaezip": [], "jpeg": [], "webp": [], "lossless": []}
    for name in HELDOUT_PHOTOS:
        img = photo(name)[None]
        whole["lossless"].append(rd_bench.lossless(img))
        whole["vaezip"].append(rd_bench.vaezip_curve(photos_ck, img, steps=(1.0, 4.0)))
        whole["jpeg"].append(rd_bench.classic_curve(img, "JPEG"))
        whole["webp"].append(rd_bench.classic_curve(img, "WEBP"))
    digit_curves = {
        "vaezip": rd_bench.vaezip_curve(digits_ck, digits, shown=shown_digits),
        "jpeg": rd_bench.classic_curve(digits, "JPEG"),
        "webp": rd_bench.classic_curve(digits, "WEBP"),
        "jpeg_tiled": rd_bench.tiled_curve(digits, "JPEG"),
        "webp_tiled": rd_bench.tiled_curve(digits, "WEBP"),
    }
    digits_lossless = rd_bench.lossless(digits) + rd_bench.tiled_curve(digits, "PNG")
    for name, samples, shown, curve in (
        ("rd_grid_photos.png", heldout, shown_photos, per_sample["vaezip"]),
        ("rd_grid_digits.png", digits, shown_digits, digit_curves["vaezip"]),
    ):
        with open(os.path.join(out, name), "wb") as f:
            f.write(rd_bench.grid_picture(samples, shown, curve))
    return {
        "photos_per_sample": per_sample,
        "photos_lossless": rd_bench.lossless(heldout),
        "photos_ratios": rd_bench.ratios(
            per_sample["vaezip"], {"jpeg": per_sample["jpeg"], "webp": per_sample["webp"]}
        ),
        "photos_whole": {"names": list(HELDOUT_PHOTOS), **whole},
        "digits": digit_curves,
        "digits_lossless": digits_lossless,
        "digits_ratios": rd_bench.ratios(
            digit_curves["vaezip"],
            {
                **{k: v for k, v in digit_curves.items() if k != "vaezip"},
                # lossless: the bytes that give any PSNR at all
                "png": [dict(c, psnr=float("inf")) for c in digits_lossless if c["codec"] == "png"],
                "png_tiled": [
                    dict(c, psnr=float("inf")) for c in digits_lossless if c["codec"] == "png tiled"
                ],
            },
        ),
        "digits_accuracy": rd_bench.classifier_accuracy(digits_ck, digits),
    }


if __name__ == "__main__":
    sys.exit(run_main(main))
