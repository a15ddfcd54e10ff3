"""Real demo data that ships inside packages: no downloads.

- Digits: ``sklearn.datasets.load_digits()``, 1,797 real handwritten digits of 8x8 pixels with
  values 0..16, stored as uint8 0..255 (v * 255 / 16, rounded) with their labels.
- Photos: the photos in ``skimage.data``. The model trains on crops of TRAIN_PHOTOS and is
  evaluated on crops of HELDOUT_PHOTOS, which training never sees. Grey photos are repeated to
  three channels so one RGB model covers all of them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.core import storage

TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "coins",
    "clock",
)
HELDOUT_PHOTOS = ("rocket", "stereo_motorcycle")


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64)


def photo(name: str) -> np.ndarray:
    """One skimage photo as uint8 (H, W, 3); the stereo pair gives its left view."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def crops(img: np.ndarray, size: int, stride: int) -> Iterator[tuple[int, int, np.ndarray]]:
    h, w = img.shape[:2]
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            yield top, left, img[top : top + size, left : left + size]


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_npz_shards(
    folder: str, images: np.ndarray, labels: np.ndarray, rows_per_shard: int, prefix: str
) -> list[str]:
    out = []
    for i, start in enumerate(range(0, len(images), rows_per_shard)):
        buf = io.BytesIO()
        np.savez(
            buf, image=images[start : start + rows_per_shard], label=labels[start : start + rows_per_shard]
        )
        uri = storage.join(folder, f"{prefix}-{i:05d}.npz")
        storage.write_bytes(uri, buf.getvalue())
        out.append(uri)
    return out


def write_photo_crops(
    folder: str, names: tuple[str, ...], size: int, stride: int, rows_per_shard: int, prefix: str
) -> tuple[list[str], int]:
    """Crops as Parquet in the Hugging Face image layout: image = {bytes, path} + metadata."""
    rows: list[dict] = []
    for name in names:
        for top, left, crop in crops(photo(name), size, stride):
            rows.append(
                {
                    "image": {"bytes": png_bytes(crop), "path": f"{name}_{top}_{left}.png"},
                    "photo": name,
                    "top": top,
                    "left": left,
                }
            )
    out = []
    for i, start in enumerate(range(0, len(rows), rows_per_shard)):
        table = pa.Table.from_pylist(rows[start : start + rows_per_shard])
        uri = storage.join(folder, f"{prefix}-{i:05d}.parquet")
        with storage.atomic_write(uri) as f:
            pq.write_table(table, f)
        out.append(uri)
    return out, len(rows)
