"""Export the encoder's posterior means as a feature table:
``python -m jobs.features --input DATA --checkpoint CKPT --output FEATURES``.

One ``<input file>.features.parquet`` per input file: ``key``, ``mean`` (float32 vector of the
flattened latent), optionally ``logvar``, ``latent_shape``, and every passthrough column
(labels, captions, ids). Runs on the same Ray actor pool as encode; a re-run finishes only
what is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._cli import Parser, add_sample_shape, run_main, save_resolved
from jobs._driver import add_limit_args, add_running_args, check_shared, dispatch, pool_config, read_options
from pipeline.core import storage
from pipeline.core.names import FEATURES_SUFFIX
from pipeline.ledger.claim import claim
from pipeline.ledger.completion import shard_states
from pipeline.ledger.plan import check_separate, fingerprint, plan_shards
from pipeline.model.checkpoint import verify_checkpoint
from pipeline.run.runner import run
from pipeline.workers.encode import EncodeSpec
from pipeline.workers.features import FeatureSpec, FeatureWorker

CONFIG = "features.config.yaml"  # every option's final value, beside the output


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.features", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="dataset: file, folder, glob or fsspec URL")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder from jobs.train")
    p.add_argument("--output", required=True, help="folder for the feature tables")
    p.add_argument("--logvar", action="store_true", help="also write the posterior log-variance")
    p.add_argument("--key-column", help="source column holding a stable id for each sample")
    p.add_argument("--array-key", help=".npz: the array that holds the samples")
    add_sample_shape(p)
    p.add_argument("--column", help="Parquet column / WebDataset field holding the samples")
    p.add_argument(
        "--images-per-shard", type=int, default=1000, help="folders of image files: images per output file"
    )
    add_running_args(p)
    add_limit_args(p)
    args = p.parse_args(argv)
    model_fp = verify_checkpoint(args.checkpoint)
    check_separate(args.input, args.output)
    check_shared(args.input, "--input")
    check_shared(args.output, "--output")
    shards = plan_shards(args.input, args.images_per_shard, suffix=FEATURES_SUFFIX)
    job_fp = fingerprint(
        "features",
        model_fp,
        args.input,
        args.logvar,
        args.key_column,
        args.array_key,
        args.column,
        args.images_per_shard,
        *([args.sample_shape] if args.sample_shape != "rows" else []),
    )
    spec = FeatureSpec(
        EncodeSpec(
            checkpoint=args.checkpoint,
            output=args.output,
            device=args.device,
            threads=args.threads,
            precision=args.precision,
            host_workers=args.host_workers,
            read=read_options(args),
            key_column=args.key_column,
        ),
        with_logvar=args.logvar,
    )

    with claim(args.output, "features"):
        save_resolved(args, storage.join(args.output, CONFIG))
        state = shard_states(args.output, shards, job_fp)
        todo = [s for s in shards if args.overwrite or state[s.name] != "done"]
        summary = run(
            FeatureWorker,
            spec,
            pool_config(args),
            lambda pool: dispatch(pool, args.output, todo, len(shards), job_fp, job_fp),
        )
    print(summary.text("features of"))
    return 0 if len(summary.failed) <= args.max_failed_shards else 1


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
