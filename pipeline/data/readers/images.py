"""Folders of image files, read as groups: one group of files is one shard.

Each image is one sample; its path relative to the folder being archived is both its key
(the source's own id) and a passthrough column ``path``, so a decode can lay the
reconstructions out the same way (``cats/001.jpg`` -> ``cats/001.png``).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.core.hostpool import Pending, host_submit, one_ahead
from pipeline.core.names import drop_data_suffix
from pipeline.data.readers.base import DEFAULT_MAX_PIXELS, Batch

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


def decode_image(data: bytes, uri: str, row: int | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W) or (H, W, 3); an image whose header declares more
    than ``max_pixels`` is refused before its pixels are decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise InputError(
                    uri,
                    f"image of {img.width}x{img.height} pixels is over the limit of {max_pixels:,} "
                    "(--max-pixels)",
                    row=row,
                )
            img.load()
            mode = _KEEP_MODES.get(img.mode)
            if mode is None:
                raise InputError(uri, f"unsupported image mode {img.mode!r}", row=row)
            return np.asarray(img.convert(mode) if img.mode != mode else img, dtype=np.uint8).copy()
    except Image.DecompressionBombError as err:
        # Pillow's own guard fired first (past twice its MAX_IMAGE_PIXELS): the same refusal
        raise InputError(
            uri, f"image is over the limit of {max_pixels:,} pixels (--max-pixels; {err})", row=row
        ) from err
    except UnidentifiedImageError as err:  # Pillow's text names a BytesIO at some address
        raise InputError(
            uri, f"corrupt image bytes (no image format recognises its {len(data):,} bytes)", row=row
        ) from err
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(uri, f"corrupt image bytes ({err})", row=row) from err


def relative(uri: str, root: str) -> str:
    return posixpath.relpath(uri.split("://", 1)[-1], root.split("://", 1)[-1])


def iter_images(
    files: tuple[str, ...],
    root: str,
    batch_rows: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 1,
    pool: str = "threads",
    only: tuple[int, ...] | None = None,
) -> Iterator[Batch]:
    """Read and decode ``files`` in order (those ``only`` names, where given), ``batch_rows``
    at a time, on ``workers`` threads or processes (``pool``), the next batch while the last
    is used; errors name the image file."""
    picked = range(len(files)) if only is None else [r for r in only if r < len(files)]

    def submitted() -> Iterator[tuple[Pending[np.ndarray], Callable[[list[np.ndarray]], Batch]]]:
        for start in range(0, len(picked), batch_rows):
            rows = list(picked[start : start + batch_rows])
            chunk = [files[r] for r in rows]
            samples = host_submit(partial(read_image, max_pixels), chunk, workers, pool)
            paths = [relative(f, root) for f in chunk]
            yield samples, partial(_finish, root, rows, paths, only is not None)

    yield from one_ahead(submitted())


def read_image(max_pixels: int, uri: str) -> np.ndarray:
    return decode_image(storage.read_bytes(uri), uri, None, max_pixels)


def _finish(root: str, rows: list[int], paths: list[str], thinned: bool, samples: list[np.ndarray]) -> Batch:
    return Batch(
        source=root,
        start_row=rows[0],
        samples=samples,
        columns={"path": paths},
        ids=[drop_data_suffix(p) for p in paths],
        source_rows=rows if thinned else None,
    )
