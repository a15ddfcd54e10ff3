"""Tiles against whole images: the held-out demo photos archived whole, as 64-pixel tiles cut
alone (``--tile-margin 0``, the old behaviour) and as tiles in context (``--tile 64``'s
default), each by the real jobs on a local Ray the jobs start themselves.

For each: the archive's bytes, the PSNR of the restored photos against the originals, and the
mean squared error of the pixels next to an inner tile edge (within ``BORDER`` pixels of it)
against that of the others: a seam shows as a ratio above 1. The whole-image archive gives the
same ratio for the same pixels, the photo's own.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from PIL import Image

from jobs import decode as decode_job
from jobs import encode as encode_job
from jobs._cli import run_main
from pipeline.core import storage
from pipeline.ledger.plan import ARCHIVE_SUFFIX

BORDER = 2  # pixels each side of an inner tile edge


def _border_mask(shape: tuple[int, ...], tile: int) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for y in range(tile, shape[0], tile):
        mask[max(0, y - BORDER) : y + BORDER] = True
    for x in range(tile, shape[1], tile):
        mask[:, max(0, x - BORDER) : x + BORDER] = True
    return mask


def measure(checkpoint: str, photos: dict[str, np.ndarray], tile: int = 64) -> dict:
    with tempfile.TemporaryDirectory(prefix="vzbench-seams-") as tmp:
        src = os.path.join(tmp, "photos")
        os.makedirs(src)
        for name, x in photos.items():
            Image.fromarray(x).save(os.path.join(src, f"{name}.png"))
        runs = {
            "whole images": [],
            f"tiles of {tile}, alone (--tile-margin 0)": ["--tile", str(tile), "--tile-margin", "0"],
            f"tiles of {tile} in context (--tile {tile})": ["--tile", str(tile)],
        }
        out = {"tile": tile, "border_px": BORDER, "photos": {k: list(v.shape) for k, v in photos.items()}}
        for label, extra in runs.items():
            arch, rec = os.path.join(tmp, f"a{len(out)}"), os.path.join(tmp, f"r{len(out)}")
            t0 = time.perf_counter()
            argv = ["--input", src, "--checkpoint", checkpoint, "--output", arch, *extra]
            if run_main(encode_job.main, argv) != 0:
                raise RuntimeError(f"encode ({label}) failed")
            t1 = time.perf_counter()
            argv = ["--input", arch, "--checkpoint", checkpoint, "--output", rec, "--format", "images"]
            if run_main(decode_job.main, argv) != 0:
                raise RuntimeError(f"decode ({label}) failed")
            t2 = time.perf_counter()
            sq = {"border": 0.0, "interior": 0.0}
            n = {"border": 0, "interior": 0}
            total, values = 0.0, 0
            for name, x in photos.items():
                y = np.asarray(Image.open(os.path.join(rec, f"{name}.png")))
                err = ((x.astype(np.float64) - y) ** 2).sum(axis=-1)
                mask = _border_mask(x.shape, tile)
                for part, m in (("border", mask), ("interior", ~mask)):
                    sq[part] += float(err[m].sum())
                    n[part] += int(m.sum()) * x.shape[-1]
                total, values = total + float(err.sum()), values + x.size
            mse = total / values
            out[label] = {
                "bytes": sum(v for k, v in storage.file_sizes(arch).items() if k.endswith(ARCHIVE_SUFFIX)),
                "psnr_db": 10 * np.log10(255.0**2 / mse),
                "border_mse": sq["border"] / n["border"],
                "interior_mse": sq["interior"] / n["interior"],
                "border_ratio": (sq["border"] / n["border"]) / (sq["interior"] / n["interior"]),
                "encode_s": t1 - t0,
                "decode_s": t2 - t1,
            }
        return out
