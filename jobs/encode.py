"""Archive a dataset as VAE latent codes:
``python -m jobs.encode --input DATA --checkpoint CKPT --output ARCHIVE``.

Re-running the same command finishes only the shards that are missing; ``--overwrite`` redoes
everything. The archive folder holds one ``.vz.parquet`` per input file, ``_done/`` completion
records, ``job.json`` (the quantizer and codec parameters, reused on re-runs), ``manifest.json``
once every shard is complete, and ``failures.json`` when some failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from jobs._cli import Parser, add_sample_shape, run_main, save_resolved
from jobs._driver import (
    Summary,
    add_limit_args,
    add_running_args,
    check_shared,
    dispatch,
    pool_config,
    read_options,
)
from pipeline.codec.codec import CODECS, FRAMINGS, LAYOUTS, TRANSFORMS, CodecConfig
from pipeline.codec.quantize import DEFAULT_MAX_LOSS_DB, QuantizerConfig
from pipeline.codec.ratecontrol import DECODE_VALUES, MIN_ROWS
from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.names import NAMES_VERSION
from pipeline.core.value_range import ValueRange
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.resize import Preprocess, parse_size, sdxl_buckets
from pipeline.data.samples import to_model
from pipeline.ledger.claim import claim
from pipeline.ledger.completion import shard_states
from pipeline.ledger.job import (
    EncodeJob,
    JobParams,
    bound_warnings,
    clear_archive,
    load_job,
    resume_job,
    save_job,
)
from pipeline.ledger.manifest import write_manifest
from pipeline.ledger.plan import check_separate, plan_shards
from pipeline.ledger.shard import Committed, Shard
from pipeline.model.checkpoint import load_checkpoint, read_checkpoint_meta, verify_checkpoint
from pipeline.model.nets import config_from_dict
from pipeline.model.reach import encoder_reach
from pipeline.run.runner import Pool, run
from pipeline.workers.encode import EncodeSpec, EncodeWorker, calibration_shards

log = logging.getLogger("jobs.encode")
CONFIG = "encode.config.yaml"  # every option's final value, beside the output


def build_parser() -> Parser:
    p = Parser(prog="python -m jobs.encode", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input",
        required=True,
        help="dataset: file, folder, glob or fsspec URL "
        "of .npy/.npz, Parquet, WebDataset .tar or image files",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder from jobs.train; or, with --target-psnr or --target-bytes, a jobs.sweep "
        "folder of rd models (--objective rd), one of which is chosen",
    )
    p.add_argument(
        "--target-psnr",
        type=float,
        metavar="DB",
        help="rate control across a sweep of rd models: the one of fewest bytes whose PSNR, as the "
        "sweep measured it, reaches DB",
    )
    p.add_argument(
        "--target-bytes",
        type=float,
        metavar="N",
        help="rate control across a sweep of rd models: the one of best PSNR within N bytes a sample, "
        "as the sweep measured it",
    )
    p.add_argument("--output", required=True, help="archive folder (path or URL)")
    q = p.add_argument_group("quantizer and codec")
    q.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="archive",
        help="archive (the default): --max-loss-db 0.1 and zstd, a bound on the samples that come "
        "back; cache: --max-latent-error 0.002 (about bf16's error on the latents) and --codec rans, "
        "a bound on the latents a diffusion model trains on, for a latent cache (0.62x fp16's bytes "
        "on the benchmark's SD-layout model; BENCHMARKS.md). Options given as well win",
    )
    q.add_argument(
        "--quantizer",
        choices=("loss", "latent", "posterior", "affine"),
        default="loss",
        help="loss (the default): the per-channel steps that keep the decoded PSNR within "
        "--max-loss-db of the unquantized latents' with the fewest bits; posterior: step follows "
        "each channel's posterior sigma, dead channels dropped; affine: 2**bits equal steps over "
        "the calibrated range; latent (what --max-latent-error picks): each channel's RMS error "
        "within a share of its spread, no decoder needed. loss is the default for archiving data "
        "(it bounds what comes back, the samples); latent for a latent cache a diffusion model "
        "trains on (it bounds the latents themselves, whatever the decoder does with them)",
    )
    q.add_argument(
        "--max-latent-error",
        type=float,
        metavar="E",
        help="latent: each channel's RMS error at most E times its standard deviation (e.g. 0.01; "
        "fp16 is about 0.0002, bf16 0.002), fitted on half the calibration rows and measured on the "
        "others; calibration then costs one encode of its rows, no decoder",
    )
    q.add_argument(
        "--max-loss-db",
        type=float,
        metavar="D",
        help=f"loss: the most PSNR quantizing may cost, in dB (default {DEFAULT_MAX_LOSS_DB:g}: "
        "far below what the eye notices; BENCHMARKS.md has what each bound costs in bytes), "
        "measured through the decoder on "
        "calibration rows the steps were not fitted on (half of those it decodes: as many as "
        f"hold {DECODE_VALUES:,} model values, at least {MIN_ROWS}, each about 12 times)",
    )
    q.add_argument(
        "--strict-bound",
        action="store_true",
        help="loss: stop the job, before any shard is encoded, when the loss measured on the check "
        "rows exceeds --max-loss-db (without it: a warning in the summary and job.json)",
    )
    q.add_argument("--bits", type=int, default=8, help="bits per code (most, for posterior)")
    q.add_argument(
        "--step-sigmas",
        type=float,
        default=1.0,
        help="posterior: quantizer step in units of the mean posterior sigma",
    )
    q.add_argument(
        "--calibration-rows",
        type=int,
        default=2048,
        help="rows sampled to calibrate the quantizer (and train the zstd dictionary of --framing row)",
    )
    q.add_argument(
        "--codec",
        choices=CODECS,
        help="zstd (the default, but for --preset cache): zstd over a measured byte layout, read "
        "back at about 500 MB/s a core, and by anyone with zstandard; rans: each code predicted "
        "from its neighbours and entropy-coded under a context model fitted on the calibration "
        "rows (20-40%% smaller than zstd on conv latents, larger on vector latents; about 80 MB/s "
        "a core to write, 160 to read; --layout, --transform and --framing do not apply; "
        "docs/FORMAT.md)",
    )
    q.add_argument(
        "--zstd-level",
        type=int,
        default=CodecConfig().level,
        help="zstd level, 1-22 (9: ~100 MB/s a core to write the demo photo codes; 19: ~9%% "
        "smaller, ~20x slower)",
    )
    q.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default=CodecConfig().layout,
        help="byte order of a row's codes before zstd; auto: whichever zstd stores smaller on "
        "the calibration rows (it depends on the model)",
    )
    q.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default=CodecConfig().transform,
        help="fold (default): each channel's codes renumbered by distance from its median, so "
        "zstd's one literal table fits every channel (about 4%% smaller on the demo codes); none: "
        "the codes as they are",
    )
    q.add_argument(
        "--framing",
        choices=FRAMINGS,
        default=CodecConfig().framing,
        help="column: zstd over each Parquet page of codes (smaller); row: one zstd "
        "frame per row (docs/FORMAT.md)",
    )
    q.add_argument(
        "--no-dictionary",
        action="store_true",
        help="--framing row: compress rows without a shared zstd dictionary",
    )
    add_running_args(p)
    d = p.add_argument_group("reading")
    d.add_argument(
        "--changed-inputs",
        choices=("redo", "refuse"),
        default="redo",
        help="a resume that finds an input changed since its shard was encoded (size, modification "
        "time or ETag): encode it again (redo, the default) or stop with one line (refuse)",
    )
    d.add_argument(
        "--key-column", help="source column holding a stable id for each sample (default: <file>:<row>)"
    )
    d.add_argument("--array-key", help=".npz: the array that holds the samples")
    add_sample_shape(d)
    d.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="archive images as tiles of NxN pixels (keys <key>@y,x), put back together on decode: "
        "bounds the model's memory on very large images (default: whole images)",
    )
    r = p.add_argument_group("images for a latent cache (pipeline.data.resize)")
    r.add_argument(
        "--size",
        metavar="S|WxH",
        help="resize each image (Lanczos, antialiased) to cover S x S (or W x H) and crop it to that; "
        "with --buckets: the buckets' area (default 1024)",
    )
    r.add_argument(
        "--buckets",
        nargs="?",
        const="sdxl",
        metavar="sdxl|WxH,WxH,...",
        help="each image to the aspect-ratio bucket nearest its shape: sdxl (the default set: sides in "
        "multiples of 64 at --size's area, ratios up to 4) or a list of sizes",
    )
    r.add_argument(
        "--crop",
        choices=("center", "random", "none"),
        default="center",
        help="with --size/--buckets: where to crop (random: seeded by --crop-seed and each row's key, "
        "so a re-run gives the same archive; none: resize to the target exactly, the aspect bent)",
    )
    r.add_argument("--crop-seed", type=int, default=0, help="the seed of --crop random")
    r.add_argument(
        "--flip",
        action="store_true",
        help="also store the latent of each image mirrored left to right, keyed <key>#flip",
    )
    r.add_argument(
        "--upscale",
        action="store_true",
        help="enlarge images smaller than their target (without it they are refused, naming file and row)",
    )
    d.add_argument(
        "--tile-margin",
        default="auto",
        metavar="PX",
        help="with --tile: pixels of the image around each tile that the encoder sees, so a tile's "
        "latents are those of the whole image (decode likewise decodes each tile with its "
        "neighbours' latents); auto: the model's own reach, measured, at most one tile; 0: each "
        "tile alone, with seams (default: auto)",
    )
    d.add_argument(
        "--value-range",
        metavar="LO,HI",
        help="the data's units that the model's 0..1 stands for, recorded in every archive file and "
        "undone on decode (default: the range the checkpoint was trained with, else 0..255 for "
        "integer pixels and 0..1 for floats); values outside it are refused, naming file and row",
    )
    d.add_argument(
        "--column",
        help="Parquet: the column that holds the samples; WebDataset: "
        "the field (file extension) that does (default: the first image field, "
        "else npy)",
    )
    d.add_argument(
        "--images-per-shard",
        type=int,
        default=1000,
        help="folders of image files: images per shard (one archive file each)",
    )
    d.add_argument(
        "--fan-out",
        type=int,
        default=0,
        metavar="N",
        help="put the archive files in N sub-folders (picked by a hash of each file's name: "
        "0417/train-00003.vz.parquet), for inputs of millions of files that one folder should not "
        "hold; the readers, decode and verify find them there (default: one folder)",
    )
    add_limit_args(p)
    return p


def choose_from_sweep(folder: str, target_psnr: float | None, target_bytes: float | None) -> dict:
    """The rd model of a ``jobs.sweep --objective rd`` folder that meets the target (its row of
    sweep.json): fewest bytes at or above ``target_psnr``, or best PSNR within ``target_bytes``."""
    if (target_psnr is None) == (target_bytes is None):
        raise ConfigError("rate control across a sweep takes one target: --target-psnr or --target-bytes")
    uri = storage.join(folder, "sweep.json")
    try:
        rows = [r for r in json.loads(storage.read_bytes(uri))["rows"] if "lmbda" in r]
    except FileNotFoundError:
        raise ConfigError(
            f"--target-psnr/--target-bytes: {uri} not found (is {folder} a jobs.sweep folder?)"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{uri}: not a readable sweep ({err})") from err
    if not rows:
        raise ConfigError(f"{uri} holds no rd models (jobs.sweep --objective rd)")
    if target_psnr is not None:
        ok = [r for r in rows if r["psnr"] >= target_psnr]
        if not ok:
            best = max(r["psnr"] for r in rows)
            raise ConfigError(f"no model of the sweep reaches {target_psnr:g} dB (the best: {best:.2f} dB)")
        return min(ok, key=lambda r: r["bytes_per_sample"])
    ok = [r for r in rows if r["bytes_per_sample"] <= target_bytes]
    if not ok:
        least = min(r["bytes_per_sample"] for r in rows)
        raise ConfigError(
            f"no model of the sweep fits in {target_bytes:g} bytes a sample (the least: {least:.1f})"
        )
    return max(ok, key=lambda r: r["psnr"])


# what --preset sets where the options are not given: the bound and the codec for each use
PRESETS: dict[str, dict[str, Any]] = {
    "archive": {"codec": CodecConfig().name},
    "cache": {"max_latent_error": 0.002, "codec": "rans"},
}


def apply_preset(args: argparse.Namespace) -> None:
    """``--preset``'s bound and codec, where neither a bound nor a quantizer nor a codec was
    given (on the command line or in ``--config``)."""
    preset = PRESETS[args.preset]
    bounded = args.max_latent_error is not None or args.max_loss_db is not None or args.quantizer != "loss"
    if "max_latent_error" in preset and not bounded:
        args.max_latent_error = preset["max_latent_error"]
    if args.codec is None:
        args.codec = preset["codec"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.target_psnr is not None or args.target_bytes is not None:
        chosen = choose_from_sweep(args.checkpoint, args.target_psnr, args.target_bytes)
        args.checkpoint = storage.join(args.checkpoint, chosen["checkpoint"])
        print(
            f"rate control: {chosen['checkpoint']} (lambda {chosen['lmbda']:g}: "
            f"{chosen['bytes_per_sample']:.1f} bytes a sample at {chosen['psnr']:.2f} dB where the sweep "
            "measured it)"
        )
    apply_preset(args)
    mode = args.quantizer
    if args.max_latent_error is not None:
        if mode not in ("loss", "latent") or args.max_loss_db is not None:
            raise ConfigError(
                "--max-latent-error bounds the latents (--quantizer latent); it takes no --max-loss-db"
            )
        mode = args.quantizer = "latent"
    if mode == "latent" and args.max_latent_error is None:
        raise ConfigError("--quantizer latent needs --max-latent-error E (e.g. 0.01)")
    if args.max_loss_db is not None and mode != "loss":
        raise ConfigError(f"--max-loss-db bounds the loss quantizer; --quantizer {mode} has no such bound")
    if mode == "loss" and args.max_loss_db is None:  # the default, as the saved config records it
        args.max_loss_db = DEFAULT_MAX_LOSS_DB
    qconfig = QuantizerConfig(
        mode=mode,
        bits=args.bits,
        step_sigmas=args.step_sigmas,
        max_loss_db=DEFAULT_MAX_LOSS_DB if args.max_loss_db is None else args.max_loss_db,
        **({"max_latent_error": args.max_latent_error} if args.max_latent_error is not None else {}),
    )
    cconfig = CodecConfig(
        level=args.zstd_level,
        layout=args.layout,
        framing=args.framing,
        dictionary=not args.no_dictionary,
        transform=args.transform,
        name=args.codec,
    )
    read = read_options(args)
    if args.tile is not None and args.tile < 1:
        raise ConfigError(f"--tile must be positive, got {args.tile}")
    margin = tile_margin(args.checkpoint, args.tile, args.tile_margin) if args.tile else 0
    preprocess = preprocess_of(args)
    model_fp = verify_checkpoint(args.checkpoint)
    check_separate(args.input, args.output)
    check_shared(args.input, "--input")
    check_shared(args.output, "--output")
    shards = plan_shards(args.input, args.images_per_shard, fan_out=args.fan_out)
    settings = {
        "model_fingerprint": model_fp,
        "input": args.input,
        "images_per_shard": args.images_per_shard,
        # max_latent_error only where it is used: a job begun before the option existed resumes
        "quantizer_config": {
            k: v for k, v in vars(qconfig).items() if k != "max_latent_error" or mode == "latent"
        },
        "codec_config": vars(cconfig),
        "key_column": args.key_column,
        "array_key": args.array_key,
        "column": args.column,
        "names_version": NAMES_VERSION,
        **({"value_range": args.value_range} if args.value_range else {}),
        **({"tile": args.tile} if args.tile else {}),
        **({"fan_out": args.fan_out} if args.fan_out > 1 else {}),
        **({"tile_margin": margin} if margin else {}),
        **({"preprocess": dataclasses.asdict(preprocess)} if preprocess else {}),
        **({"sample_shape": args.sample_shape} if args.sample_shape != "rows" else {}),
    }
    # tiles are cut to the model's size later; a re-run of this job was checked when it began
    earlier = None if args.overwrite else load_job(args.output)
    if not args.tile and (earlier is None or earlier.settings != settings):
        preflight(shards, args.checkpoint, read, ValueRange.of(args.value_range))
    with claim(args.output, "encode"):
        return _run(args, shards, settings, qconfig, cconfig, read, preprocess)


def preprocess_of(args: argparse.Namespace) -> Preprocess | None:
    """--size, --buckets, --crop, --flip, --upscale as one ``Preprocess`` (None without a size)."""
    if args.size is None and args.buckets is None:
        if args.flip or args.upscale or args.crop != "center":
            raise ConfigError("--crop, --flip and --upscale go with --size or --buckets")
        return None
    if args.tile:
        raise ConfigError("--tile cuts images as they are; it does not go with --size or --buckets")
    size = parse_size(args.size) if args.size else None
    buckets: tuple[tuple[int, int], ...] = ()
    if args.buckets == "sdxl":
        h, w = size or (1024, 1024)
        buckets = tuple(sdxl_buckets(h * w))
    elif args.buckets:
        buckets = tuple(parse_size(b) for b in args.buckets.split(","))
    return Preprocess(size, buckets, args.crop, args.flip, args.upscale, args.crop_seed)


def tile_margin(checkpoint: str, tile: int, asked: str) -> int:
    """--tile-margin as pixels: measured for ``auto``; with a margin, the tile size and the
    margin are multiples of the model's downsampling factor, so the tiles' latents sit on the
    whole image's latent grid."""
    if asked != "auto" and not asked.isdigit():
        raise ConfigError(f"--tile-margin must be auto or a number of pixels, got {asked!r}")
    config = config_from_dict(read_checkpoint_meta(checkpoint)["model"])
    factor = getattr(config, "downsample_factor", None)
    if factor is None or (asked == "auto" and tile % factor):
        why = "an MLP sees one tile at a time" if factor is None else f"{tile} is not a multiple of {factor}"
        if asked not in ("auto", "0"):
            raise ConfigError(
                f"--tile-margin needs a convolutional model and --tile a multiple of its "
                f"downsampling factor: {why}"
            )
        log.warning("--tile %d: each tile is encoded and decoded alone, with seams (%s)", tile, why)
        return 0
    if asked == "auto":
        margin = encoder_reach(load_checkpoint(checkpoint).model, tile)  # type: ignore[arg-type]
        log.info("--tile %d: %d pixels of context around each tile (the encoder's reach)", tile, margin)
        return margin
    margin = int(asked)
    if margin and (margin % factor or tile % factor):
        raise ConfigError(
            f"--tile {tile} and --tile-margin {margin} must be multiples of the model's downsampling "
            f"factor {factor} (or --tile-margin 0: each tile alone, with seams)"
        )
    return margin


def preflight(
    shards: list[Shard], checkpoint: str, read: ReadOptions, value_range: ValueRange | None
) -> None:
    """Before Ray starts (a minute on a laptop): the first sample of up to three shards spread
    over the input against the checkpoint's input layout. Refused only where every one checked
    fails (then every shard would): one odd file among good ones fails its own shard later."""
    meta = read_checkpoint_meta(checkpoint)
    config = config_from_dict(meta["model"])
    value_range = value_range or ValueRange.of(meta.get("value_range"))
    picked = sorted({0, len(shards) // 2, len(shards) - 1})
    errors = []
    for shard in (shards[i] for i in picked):
        try:
            listed = shard.input_bytes() if shard.identity and not shard.members else None
            options = replace(read, batch_rows=1, source_bytes=listed)  # no HEAD to ask the size
            batch = next(iter(iter_batches(shard.source, options, shard.members)), None)
            if batch is None or not batch.samples:
                continue
            to_model(batch.samples[0], config, batch.source, batch.start_row, value_range)
            return
        except InputError as err:
            errors.append(err)
    if errors and len(errors) == len(picked):
        raise ConfigError(f"the input does not fit the checkpoint {checkpoint}: {errors[0]}")


def _run(
    args: argparse.Namespace,
    shards: list[Shard],
    settings: dict[str, Any],
    qconfig: QuantizerConfig,
    cconfig: CodecConfig,
    read: ReadOptions,
    preprocess: Preprocess | None,
) -> int:
    """The job, once the output folder is this driver's."""
    if args.overwrite:  # start afresh: exactly one job's files will be left
        if clear_archive(args.output):
            log.info("--overwrite: removed the previous job's files from %s", args.output)
        previous = None
    else:
        previous = resume_job(args.output, settings)
    save_resolved(args, storage.join(args.output, CONFIG))
    spec = EncodeSpec(
        checkpoint=args.checkpoint,
        output=args.output,
        read=read,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        host_workers=args.host_workers,
        key_column=args.key_column,
        value_range=ValueRange.of(args.value_range),
        tile=args.tile,
        tile_margin=settings.get("tile_margin", 0),
        preprocess=preprocess,
    )

    jobs: list[JobParams] = []
    found = Committed()  # what was done before this run, for the manifest

    def body(pool: Pool) -> tuple[str, Summary]:
        if previous is not None:
            job = previous.params
        else:
            sampled = calibration_shards(shards)  # the actor is handed only what it reads
            qparams, cparams = pool.call_one(
                "calibrate", sampled, args.calibration_rows, qconfig, cconfig, True
            )
            job = JobParams.of(settings, qparams, cparams)
            missed = bound_warnings(qparams)
            if missed and args.strict_bound:
                raise ConfigError(f"{missed[0]} (--strict-bound: nothing was encoded)")
        save_job(args.output, EncodeJob(settings, job))
        jobs.append(job)
        state = shard_states(args.output, shards, job.job_fingerprint, found=found)
        changed = [s for s in shards if state[s.name] == "changed"]
        if changed and args.changed_inputs == "refuse":
            raise ConfigError(
                f"{changed[0].source} changed since it was encoded into {changed[0].name} ({len(changed)} "
                "input(s) changed); re-run with --changed-inputs redo to encode them again"
            )
        if changed:
            log.warning(
                "%d input(s) changed since they were encoded (%s, ...): encoding them again",
                len(changed),
                changed[0].source,
            )
        todo = [s for s in shards if state[s.name] != "done"]
        del state, changed  # not held through the dispatch
        log.info("%d shards, %d to do", len(shards), len(todo))
        return job.job_fingerprint, dispatch(pool, args.output, todo, len(shards), job.job_fingerprint, job)

    job_fp, summary = run(EncodeWorker, spec, pool_config(args), body)
    print(summary.text("encoded"))
    q = jobs[0].quantizer if jobs else None
    if q is not None and q.measured_loss_db is not None:
        print(
            f"  quantizer: loss {q.measured_loss_db:.3f} dB (bound {q.target_loss_db:g} dB; standard "
            f"error {q.measured_loss_se_db or 0:.3f} dB) measured through the decoder on calibration "
            f"rows it was not fitted on; codes ~{q.bits_per_value:.2f} bits per latent value (order-0 "
            "entropy)"
        )
    if q is not None and q.measured_latent_error is not None:
        bound = f"bound {q.target_latent_error:g}; " if q.target_latent_error is not None else ""
        dropped = q.channels - sum(q.active)
        print(
            f"  latents: RMS error {100 * q.measured_latent_error:.3g}% of the channel's standard deviation "
            f"in the worst {'kept ' if dropped else ''}channel ({bound}measured on calibration rows"
            f"{' it was not fitted on' if q.target_latent_error is not None else ''})"
            + (f"; {dropped} channel(s) with no information dropped" if dropped else "")
        )
    if q is not None and q.measured_loss_db is None:
        print(
            "  pixels: the loss was not measured (this quantizer needs no decoder); "
            "jobs.verify --checkpoint measures it"
        )
    for warning in bound_warnings(q) if q is not None else []:
        log.warning("%s", warning)
        print(f"  warning: {warning}")
    if not summary.failed:
        m = write_manifest(args.output, shards, job_fp, {"kind": "encode"}, summary.committed(found))
        print(f"archive {args.output}: {m['rows']} rows in {m['bytes']:,} bytes; manifest written")
    return 0 if len(summary.failed) <= args.max_failed_shards else 1


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
