"""Write the demo datasets: ``python -m jobs.prepare_demo --output data/demo``.

OUTPUT/digits/       digits-0000N.npz   (image uint8 8x8, label)     from sklearn
OUTPUT/photos/train/ train-0000N.parquet (64x64 crops, stride 32)    skimage TRAIN_PHOTOS
OUTPUT/photos/heldout/ heldout-0000N.parquet (64x64 crops, stride 64) skimage HELDOUT_PHOTOS
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._cli import Parser, run_main
from pipeline.core import storage
from pipeline.data import demo_data


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.prepare_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="data/demo", help="folder (or URL) to write into")
    p.add_argument("--crop", type=int, default=64, help="side of the square photo crops, pixels")
    p.add_argument("--rows-per-shard", type=int, default=512, help="samples per .npz shard")
    args = p.parse_args(argv)

    images, labels = demo_data.digits()
    shards = demo_data.write_npz_shards(
        storage.join(args.output, "digits"), images, labels, args.rows_per_shard, "digits"
    )
    print(f"digits: {len(images)} images in {len(shards)} shards")
    for split, names, stride in (
        ("train", demo_data.TRAIN_PHOTOS, args.crop // 2),
        ("heldout", demo_data.HELDOUT_PHOTOS, args.crop),
    ):
        shards, rows = demo_data.write_photo_crops(
            storage.join(args.output, "photos", split), names, args.crop, stride, args.rows_per_shard, split
        )
        print(
            f"photos/{split}: {rows} crops of {args.crop}x{args.crop} from "
            f"{', '.join(names)} in {len(shards)} shards"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
