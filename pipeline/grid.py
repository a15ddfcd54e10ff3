"""Samples laid out in one image: a near-square grid, row-major, blank cells at the end."""

from __future__ import annotations

import numpy as np


def tile(samples: np.ndarray, columns: int | None = None) -> np.ndarray:
    """N equal (H, W[, C]) samples -> one (rows*H, columns*W[, C]) image."""
    n, h, w = samples.shape[:3]
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    grid = np.zeros((rows * cols, *samples.shape[1:]), dtype=samples.dtype)
    grid[:n] = samples
    grid = grid.reshape(rows, cols, h, w, *samples.shape[3:]).swapaxes(1, 2)
    return grid.reshape(rows * h, cols * w, *samples.shape[3:])


def untile(image: np.ndarray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``tile``: the first ``n`` samples of ``shape`` back out of the grid."""
    h, w = shape[:2]
    rows, cols = image.shape[0] // h, image.shape[1] // w
    grid = image.reshape(rows, h, cols, w, *shape[2:]).swapaxes(1, 2)
    return grid.reshape(rows * cols, *shape)[:n]
