"""Samples laid out in one image: a near-square grid, row-major, blank cells at the end."""

from __future__ import annotations

import numpy as np


def tile(samples: np.ndarray, columns: int | None = None, gap: int = 0, fill: float = 0) -> np.ndarray:
    """N equal (H, W[, C]) samples -> one image of ``columns`` per row. ``gap`` pixels of
    ``fill`` between cells keep small samples (digits) apart in a picture; without a gap the
    grid is exactly (rows*H, columns*W[, C]), as the tiled-codec benchmark needs (``untile``)."""
    n, h, w = samples.shape[:3]
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    grid = np.full((rows * cols, h + gap, w + gap, *samples.shape[3:]), fill, dtype=samples.dtype)
    grid[:n, :h, :w] = samples
    grid = grid.reshape(rows, cols, h + gap, w + gap, *samples.shape[3:]).swapaxes(1, 2)
    image = grid.reshape(rows * (h + gap), cols * (w + gap), *samples.shape[3:])
    return image[: image.shape[0] - gap, : image.shape[1] - gap] if gap else image


def untile(image: np.ndarray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``tile``: the first ``n`` samples of ``shape`` back out of the grid."""
    h, w = shape[:2]
    rows, cols = image.shape[0] // h, image.shape[1] // w
    grid = image.reshape(rows, h, cols, w, *shape[2:]).swapaxes(1, 2)
    return grid.reshape(rows * cols, *shape)[:n]


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """``np.stack(rows)``, without the copy when the rows are already all the rows, in order,
    of the one array numpy gives as their base (as host workers hand them out): then that
    array itself."""
    base = rows[0].base if rows else None
    if (
        isinstance(base, np.ndarray)
        and base.flags.c_contiguous
        and base.shape == (len(rows), *rows[0].shape)
        and base.dtype == rows[0].dtype
    ):
        start, step = base.__array_interface__["data"][0], base.strides[0]
        at = [r.__array_interface__["data"][0] for r in rows]
        if all(r.base is base and r.shape == rows[0].shape for r in rows) and at == [
            start + j * step for j in range(len(rows))
        ]:
            return base
    return np.stack(rows)
