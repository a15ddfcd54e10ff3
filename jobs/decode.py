"""Restore an archive: ``python -m jobs.decode --input ARCHIVE --checkpoint CKPT --output DIR``.

Checks every file's format version and model fingerprint, and every row's checksum, then
writes reconstructions in the source's shape and dtype as ``.npy`` (+ ``.keys.parquet``),
Parquet with PNG bytes, a folder of image files or WebDataset ``.tar`` shards, with every key
and passthrough column. Re-running finishes only what is missing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence

from jobs._cli import Parser, run_main, save_resolved
from jobs._driver import add_running_args, check_shared, dispatch, pool_config
from pipeline.codec.format import read_keys
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.data.outputs import KEYED_FORMATS, OUTPUT_FORMATS, SUFFIXES, check_sample_paths
from pipeline.ledger.claim import claim
from pipeline.ledger.completion import shard_states
from pipeline.ledger.manifest import this_jobs_files, write_manifest
from pipeline.ledger.ownership import check_decode_output, clear_stale_outputs, read_records
from pipeline.ledger.plan import check_separate, fingerprint, plan_archive
from pipeline.ledger.shard import Committed, Shard
from pipeline.model.checkpoint import verify_checkpoint
from pipeline.run.runner import run
from pipeline.workers.decode import DecodeSpec, DecodeWorker

log = logging.getLogger("jobs.decode")
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
    check_separate(args.input, args.output)
    check_shared(args.input, "--input")
    check_shared(args.output, "--output")
    shards = plan_archive(args.input, SUFFIXES[args.format])
    # Completion names what the outputs were made from: the archive files' recorded hashes.
    job_fp = fingerprint(model_fp, args.format, [(s.name, s.listed and s.listed.sha256) for s in shards])
    if args.format in KEYED_FORMATS:
        check_sample_paths(args.format, lambda: _keys(shards))
    with claim(args.output, "decode"):
        # once, for the check and the clean-up: what this job's manifest and progress tables
        # list is not read again
        known = this_jobs_files(args.output, job_fp)
        records = read_records(args.output, known=known, job_fingerprint=job_fp)
        other = check_decode_output(args.output, [s.source for s in shards], args.overwrite, records)
        keep = {s.name for s in shards}
        removed = clear_stale_outputs(args.output, keep, job_fp, args.overwrite or other, records)
        if removed:
            whose = "of another archive's decode" if other else "of an earlier decode"
            log.info("removed %d outputs %s that this one replaces", removed, whose)
        save_resolved(args, storage.join(args.output, CONFIG))
        found = Committed()  # what was done before this run, for the manifest
        state = shard_states(args.output, shards, job_fp, found=found, records=dict(records), known=known)
        todo = [s for s in shards if state[s.name] != "done"]
        spec = DecodeSpec(
            checkpoint=args.checkpoint,
            output=args.output,
            output_format=args.format,
            batch_rows=args.batch_rows,
            device=args.device,
            threads=args.threads,
            precision=args.precision,
            host_workers=args.host_workers,
            host_pool=args.host_pool,
            job_fingerprint=job_fp,
        )
        summary = run(
            DecodeWorker,
            spec,
            pool_config(args),
            lambda pool: dispatch(pool, args.output, todo, len(shards), job_fp),
        )
        print(summary.text("decoded"))
        if not summary.failed:
            extra = {"kind": "decode", "archive": args.input}
            write_manifest(args.output, shards, job_fp, extra, summary.committed(found))
    return 0 if len(summary.failed) <= args.max_failed_shards else 1


def _keys(shards: list[Shard]) -> Iterator[tuple[str, int, str]]:
    """Every key of the archive, with its file and row; a file that cannot be read is left to
    fail its own shard."""
    for s in shards:
        try:
            keys = read_keys(s.source)
        except InputError:
            continue
        for row, key in enumerate(keys):
            yield s.source, row, key


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
