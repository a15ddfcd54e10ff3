"""Archive a dataset as VAE latent codes:
``python -m jobs.encode --input DATA --checkpoint CKPT --output ARCHIVE``.

Re-running the same command finishes only the shards that are missing; ``--overwrite`` redoes
everything. The archive folder holds one ``.vz.parquet`` per input file, ``_done/`` completion
records, ``job.json`` (the quantizer and codec parameters, reused on re-runs), ``manifest.json``
once every shard is complete, and ``failures.json`` when some failed.
"""

from __future__ import annotations

import argparse
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
from pipeline.data.samples import to_model
from pipeline.ledger.claim import claim
from pipeline.ledger.completion import shard_states
from pipeline.ledger.job import EncodeJob, JobParams, bound_warnings, clear_archive, resume_job, save_job
from pipeline.ledger.manifest import write_manifest
from pipeline.ledger.plan import check_separate, plan_shards
from pipeline.ledger.shard import Shard
from pipeline.model.checkpoint import read_checkpoint_meta, verify_checkpoint
from pipeline.model.nets import config_from_dict
from pipeline.run.runner import Pool, run
from pipeline.workers.encode import EncodeSpec, EncodeWorker

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
    p.add_argument("--checkpoint", required=True, help="checkpoint folder from jobs.train")
    p.add_argument("--output", required=True, help="archive folder (path or URL)")
    q = p.add_argument_group("quantizer and codec")
    q.add_argument(
        "--quantizer",
        choices=("loss", "posterior", "affine"),
        default="loss",
        help="loss (the default): the per-channel steps that keep the decoded PSNR within "
        "--max-loss-db of the unquantized latents' with the fewest bits; posterior: step follows "
        "each channel's posterior sigma, dead channels dropped; affine: 2**bits equal steps over "
        "the calibrated range. loss is the default because it is the only one that says what "
        "quality you get, and in the benchmarks it also spent the fewest bytes (BENCHMARKS.md, "
        "'Against latent caches', has the sweep)",
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
        default=CodecConfig().name,
        help="zstd (default): zstd over a measured byte layout, read back at about 500 MB/s a "
        "core, and by anyone with zstandard; rans: each code predicted from its neighbours and "
        "entropy-coded under a context model fitted on the calibration rows (20-40%% smaller than "
        "zstd on conv latents, larger on vector latents; about 80 MB/s a core to write, 160 to "
        "read; --layout, --transform and --framing do not apply; docs/FORMAT.md)",
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
        help="archive images as tiles of NxN pixels (keys <key>@y,x), put back together exactly on "
        "decode: bounds the model's memory on very large images (default: whole images)",
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
    add_limit_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = args.quantizer
    if args.max_loss_db is not None and mode != "loss":
        raise ConfigError(f"--max-loss-db bounds the loss quantizer; --quantizer {mode} has no such bound")
    if mode == "loss" and args.max_loss_db is None:  # the default, as the saved config records it
        args.max_loss_db = DEFAULT_MAX_LOSS_DB
    qconfig = QuantizerConfig(
        mode=mode,
        bits=args.bits,
        step_sigmas=args.step_sigmas,
        max_loss_db=DEFAULT_MAX_LOSS_DB if args.max_loss_db is None else args.max_loss_db,
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
    model_fp = verify_checkpoint(args.checkpoint)
    check_separate(args.input, args.output)
    check_shared(args.input, "--input")
    check_shared(args.output, "--output")
    shards = plan_shards(args.input, args.images_per_shard)
    if not args.tile:  # tiles are cut to the model's size later
        preflight(shards, args.checkpoint, read, ValueRange.of(args.value_range))
    settings = {
        "model_fingerprint": model_fp,
        "input": args.input,
        "images_per_shard": args.images_per_shard,
        "quantizer_config": vars(qconfig),
        "codec_config": vars(cconfig),
        "key_column": args.key_column,
        "array_key": args.array_key,
        "column": args.column,
        "names_version": NAMES_VERSION,
        **({"value_range": args.value_range} if args.value_range else {}),
        **({"tile": args.tile} if args.tile else {}),
        **({"sample_shape": args.sample_shape} if args.sample_shape != "rows" else {}),
    }
    with claim(args.output, "encode"):
        return _run(args, shards, settings, qconfig, cconfig, read)


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
            batch = next(iter(iter_batches(shard.source, replace(read, batch_rows=1), shard.members)), None)
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
    )

    jobs: list[JobParams] = []

    def body(pool: Pool) -> tuple[str, Summary]:
        if previous is not None:
            job = previous.params
        else:
            qparams, cparams = pool.call_one("calibrate", shards, args.calibration_rows, qconfig, cconfig)
            job = JobParams.of(settings, qparams, cparams)
            missed = bound_warnings(qparams)
            if missed and args.strict_bound:
                raise ConfigError(f"{missed[0]} (--strict-bound: nothing was encoded)")
        save_job(args.output, EncodeJob(settings, job))
        jobs.append(job)
        state = shard_states(args.output, shards, job.job_fingerprint)
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
    for warning in bound_warnings(q) if q is not None else []:
        log.warning("%s", warning)
        print(f"  warning: {warning}")
    if not summary.failed:
        m = write_manifest(args.output, shards, job_fp, {"kind": "encode"})
        print(f"archive {args.output}: {m['rows']} rows in {m['bytes']:,} bytes; manifest written")
    return 0 if len(summary.failed) <= args.max_failed_shards else 1


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
