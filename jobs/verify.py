"""Compare restored samples with the originals:
``python -m jobs.verify --original DATA --restored DIR`` (restored with ``--format npy``).

Matches rows by key, checks that every original key was restored exactly once, and prints
the mean per-sample PSNR (peak 255 for uint8, 1 for float data) and the archive ratio.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from jobs._cli import Parser, run_main
from pipeline import storage
from pipeline.errors import InputError
from pipeline.integrity import check_archive
from pipeline.names import sample_key
from pipeline.plan import plan_shards
from pipeline.readers import ReadOptions, iter_batches


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, help="the dataset that was encoded")
    p.add_argument("--restored", required=True, help="output folder of jobs.decode --format npy")
    p.add_argument("--archive", help="archive folder, to report its size against the input")
    args = p.parse_args(argv)
    psnrs: list[float] = []
    input_bytes = 0
    for shard in plan_shards(args.original, suffix=""):
        stem = storage.join(args.restored, shard.name)
        try:
            restored = np.load(io.BytesIO(storage.read_bytes(stem + ".npy")))
            keys = pq.read_table(io.BytesIO(storage.read_bytes(stem + ".keys.parquet")))["key"]
        except FileNotFoundError as err:
            raise InputError(stem + ".npy", "restored shard is missing") from err
        keys = keys.to_pylist()
        batches = list(iter_batches(shard.source, ReadOptions(), shard.members))
        originals = [s for b in batches for s in b.samples]
        expected = [k for b in batches for k in (b.ids or [sample_key(shard.relpath, r) for r in b.rows])]
        if keys != expected:
            raise InputError(stem + ".keys.parquet", "keys differ from the original rows")
        for x, y in zip(originals, restored, strict=True):
            peak = 255.0 if x.dtype == np.uint8 else 1.0
            mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
            psnr = 10 * np.log10(peak**2 / max(mse, 1e-12))
            psnrs.append(psnr)
        input_bytes += shard.input_bytes()
    line = f"verified {len(psnrs)} rows: mean PSNR {np.mean(psnrs):.2f} dB"
    if args.archive:
        manifest = json.loads(storage.read_bytes(storage.join(args.archive, "manifest.json")))
        line += (
            f"; archive {manifest['bytes']:,} bytes for {input_bytes:,} input bytes "
            f"(ratio {input_bytes / manifest['bytes']:.2f}, "
            f"{manifest['bytes'] / len(psnrs):.1f} bytes per sample)"
        )
    print(line)
    if args.archive:
        problems = check_archive(args.archive)
        for problem in problems:
            print(f"FAILED {problem}")
        if problems:
            return 1
        print("archive: every file matches its manifest entry (size, sha256, rows)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
