"""Images archived as tiles (``--tile N``) and put back together, exactly, on decode.

    encode: image (H, W[, C]) with key K -> tiles of N x N (smaller at the right and bottom
            edges), row-major, keys ``K@y,x`` (the tile's top-left pixel), passthrough columns
            repeated on every tile; the archive's metadata records ``tile: N``
    decode: consecutive rows ``K@y,x`` -> one image of key K, each tile at (y, x); the image's
            size is where the last tiles end, so nothing needs storing beyond the tiles

A tile bounds what the model holds at once (a raster of 20,000 pixels a side does not fit in
one pass of a conv VAE), at the cost of seams where tiles meet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.core.errors import InputError
from pipeline.data.outputs import OutputWriter
from pipeline.data.readers import Batch

TILE_KEY = re.compile(r"^(.*)@(\d+),(\d+)$")


def tile_key(key: str, y: int, x: int) -> str:
    return f"{key}@{y},{x}"


def split_tile_key(key: str) -> tuple[str, int, int] | None:
    m = TILE_KEY.match(key)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def tiles_of(x: np.ndarray, size: int) -> Iterator[tuple[int, int, np.ndarray]]:
    for y0 in range(0, x.shape[0], size):
        for x0 in range(0, x.shape[1], size):
            yield y0, x0, np.ascontiguousarray(x[y0 : y0 + size, x0 : x0 + size])


def tiled(batch: Batch, size: int, keys: list[str], where: str) -> Batch:
    """``batch`` with every image cut into tiles; ``keys`` are the images' own keys."""
    samples, ids, rows = [], [], []
    columns: dict[str, list[Any]] = {name: [] for name in batch.columns}
    for i, (key, x, row) in enumerate(zip(keys, batch.samples, batch.rows, strict=True)):
        if x.ndim not in (2, 3):
            raise InputError(where, f"--tile cuts images, this sample has shape {x.shape}", row=row)
        for y0, x0, t in tiles_of(x, size):
            samples.append(t)
            ids.append(tile_key(key, y0, x0))
            rows.append(row)
            for name, values in batch.columns.items():
                columns[name].append(values[i])
    return replace(batch, samples=samples, columns=columns, ids=ids, source_rows=rows)


def assemble(tiles: list[tuple[int, int, np.ndarray]], key: str, uri: str) -> np.ndarray:
    """Tiles at their places -> the image; refuses tiles that leave a hole or overlap."""
    h = max(y + t.shape[0] for y, _, t in tiles)
    w = max(x + t.shape[1] for _, x, t in tiles)
    first = tiles[0][2]
    out = np.zeros((h, w, *first.shape[2:]), first.dtype)
    covered = np.zeros((h, w), np.int32)
    for y, x, t in tiles:
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
        covered[y : y + t.shape[0], x : x + t.shape[1]] += 1
    if not (covered == 1).all():
        raise InputError(uri, f"the tiles of {key!r} do not cover its image exactly once")
    return out


class Reassembled(OutputWriter):
    """An output writer fed tiles that writes whole images: the tiles of one image are
    consecutive rows of the archive, so one image is held at a time."""

    def __init__(self, writer: OutputWriter, uri: str) -> None:
        self.writer, self.uri = writer, uri
        self.key: str | None = None
        self.tiles: list[tuple[int, int, np.ndarray]] = []
        self.columns: dict[str, Any] = {}

    def _flush(self) -> None:
        if self.key is not None:
            image = assemble(self.tiles, self.key, self.uri)
            self.writer.write([self.key], [image], {k: [v] for k, v in self.columns.items()})
        self.key, self.tiles = None, []

    def write(self, keys: list[str], samples: list[np.ndarray], columns: dict[str, list]) -> None:
        for i, (k, x) in enumerate(zip(keys, samples, strict=True)):
            parts = split_tile_key(k)
            if parts is None:
                raise InputError(self.uri, f"key {k!r} names no tile, in an archive of tiles")
            base, y, x0 = parts
            if base != self.key:
                self._flush()
                self.key, self.columns = base, {name: values[i] for name, values in columns.items()}
            self.tiles.append((y, x0, x))

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.extra_bytes = self.writer.extra_bytes

    def abort(self) -> None:
        self.writer.abort()


def images_in(keys: list[str]) -> int:
    """How many images the tile keys of one archive file make up."""
    bases = [p[0] for p in map(split_tile_key, keys) if p is not None]
    return sum(1 for i, b in enumerate(bases) if i == 0 or b != bases[i - 1])
