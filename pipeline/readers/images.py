"""Folders of image files, read as groups: one group of files is one shard.

Each image is one sample; its path relative to the folder being archived is both its key
(the source's own id) and a passthrough column ``path``, so a decode can lay the
reconstructions out the same way (``cats/001.jpg`` -> ``cats/001.png``).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline import storage
from pipeline.errors import InputError
from pipeline.readers.base import Batch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Image modes decoded as they are; others are converted to the nearest of these.
_KEEP_MODES = {
    "L": "L",
    "RGB": "RGB",
    "P": "RGB",
    "RGBA": "RGB",
    "LA": "L",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "1": "L",
}


def decode_image(data: bytes, uri: str, row: int | None) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W) or (H, W, 3)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = _KEEP_MODES.get(img.mode)
            if mode is None:
                raise InputError(uri, f"unsupported image mode {img.mode!r}", row=row)
            return np.asarray(img.convert(mode) if img.mode != mode else img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(uri, f"corrupt image bytes ({err})", row=row) from err


def relative(uri: str, root: str) -> str:
    return posixpath.relpath(uri.split("://", 1)[-1], root.split("://", 1)[-1])


def iter_images(files: tuple[str, ...], root: str, batch_rows: int) -> Iterator[Batch]:
    """Decode ``files`` in order, ``batch_rows`` at a time; errors name the image file."""
    for start in range(0, len(files), batch_rows):
        chunk = files[start : start + batch_rows]
        samples = [decode_image(storage.read_bytes(f), f, None) for f in chunk]
        paths = [relative(f, root) for f in chunk]
        yield Batch(source=root, start_row=start, samples=samples, columns={"path": paths}, ids=paths)
