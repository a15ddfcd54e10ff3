"""Restore an archive: ``python -m jobs.decode --input ARCHIVE --checkpoint CKPT --output DIR``.

Checks every file's format version and model fingerprint, and every row's checksum, then
writes reconstructions in the source's shape and dtype as ``.npy`` (+ ``.keys.parquet``),
Parquet with PNG bytes, a folder of image files or WebDataset ``.tar`` shards, with every key
and passthrough column. Re-running finishes only what is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._cli import Parser, run_main, save_resolved
from jobs._driver import add_running_args, dispatch, pool_config
from pipeline import storage
from pipeline.checkpoint import verify_checkpoint
from pipeline.completion import is_complete
from pipeline.decode import DecodeSpec, DecodeWorker
from pipeline.manifest import write_manifest
from pipeline.outputs import OUTPUT_FORMATS, SUFFIXES
from pipeline.plan import fingerprint, plan_archive
from pipeline.runner import run

CONFIG = "decode.config.yaml"  # every option's final value, beside the output


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="archive folder written by jobs.encode")
    p.add_argument("--checkpoint", required=True, help="the checkpoint that encoded it")
    p.add_argument("--output", required=True, help="folder for reconstructions")
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="npy",
        help="npy: one array per shard + .keys.parquet; parquet: key, PNG bytes and "
        "columns; images: one PNG per row at a path from its key, plus "
        "<shard>.index.parquet; webdataset: one .tar per shard",
    )
    add_running_args(p)
    args = p.parse_args(argv)

    model_fp = verify_checkpoint(args.checkpoint)
    shards = plan_archive(args.input, SUFFIXES[args.format])
    save_resolved(args, storage.join(args.output, CONFIG))
    job_fp = fingerprint(model_fp, args.input, args.format)
    todo = [s for s in shards if args.overwrite or not is_complete(args.output, s.name, job_fp)]
    spec = DecodeSpec(
        checkpoint=args.checkpoint,
        output=args.output,
        output_format=args.format,
        batch_rows=args.batch_rows,
        device=args.device,
        threads=args.threads,
        job_fingerprint=job_fp,
    )
    summary = run(
        DecodeWorker, spec, pool_config(args), lambda pool: dispatch(pool, args.output, todo, len(shards))
    )
    print(summary.text("decoded"))
    if not summary.failed:
        write_manifest(args.output, shards, job_fp, {"kind": "decode", "archive": args.input})
    return 0 if len(summary.failed) <= args.max_failed_shards else 1


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
