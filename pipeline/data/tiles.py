"""Images archived as tiles (``--tile N``) and put back together, exactly, on decode.

    encode: image (H, W[, C]) with key K -> tiles of N x N (smaller at the right and bottom
            edges), row-major, keys ``K@y,x`` (the tile's top-left pixel), passthrough columns
            repeated on every tile; the archive's metadata records ``tile: N``
    decode: consecutive rows ``K@y,x`` -> one image of key K, each tile at (y, x); the image's
            size is where the last tiles end, so nothing needs storing beyond the tiles

A tile bounds what the model holds at once (a raster of 20,000 pixels a side does not fit in
one pass of a conv VAE). Tiles cut alone would show seams where they meet (the encoder and the
decoder see zeros past a tile's edge), so a fully convolutional model sees context:

    encode: each tile goes through the encoder inside a window of ``margin`` more pixels each
            side (``windows``), and only the tile's own latent cells are kept (``Window.cells``):
            the archive holds no more values than tiles cut alone
    decode: the tiles' latents of one image are laid in their grid (``by_image``, ``mosaic``) and
            each tile is decoded from its cells and up to ``reach`` cells around them
            (``context_windows``), and only its own pixels are kept

With a margin and a reach at least the model's (``pipeline.model.reach``) a tile comes out as it
would from the whole image at once. Tile origins are multiples of the tile size, so of the
downsampling factor when the size is: the tiles' latents then sit on the whole image's grid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.core.errors import InputError
from pipeline.data.archive import LatentBatch
from pipeline.data.outputs import OutputWriter
from pipeline.data.readers import Batch

TILE_KEY = re.compile(r"^(.*)@(\d+),(\d+)$")


def tile_key(key: str, y: int, x: int) -> str:
    return f"{key}@{y},{x}"


def split_tile_key(key: str) -> tuple[str, int, int] | None:
    m = TILE_KEY.match(key)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


@dataclass(frozen=True)
class Window:
    """A tile at (y, x), h x w pixels, inside its window of context: the window starts ``top``
    and ``left`` pixels before the tile (fewer at the image's edges)."""

    y: int
    x: int
    h: int
    w: int
    top: int = 0
    left: int = 0

    def cells(self, factor: int) -> tuple[slice, slice]:
        """The tile's own latent cells within its window's latents."""
        t, le = self.top // factor, self.left // factor
        return slice(t, t + -(-self.h // factor)), slice(le, le + -(-self.w // factor))

    def pixels(self, window: np.ndarray, channels_first: bool = False) -> np.ndarray:
        """The tile's own pixels of its window: (H, W[, C]), or a model array (C, H, W)."""
        ys, xs = slice(self.top, self.top + self.h), slice(self.left, self.left + self.w)
        return window[:, ys, xs] if channels_first else window[ys, xs]


def windows(x: np.ndarray, size: int, margin: int) -> Iterator[tuple[Window, np.ndarray]]:
    """The tiles of image ``x`` (row-major), each in a window of up to ``margin`` pixels more."""
    height, width = x.shape[:2]
    for y0 in range(0, height, size):
        for x0 in range(0, width, size):
            wy, wx = max(0, y0 - margin), max(0, x0 - margin)
            h, w = min(size, height - y0), min(size, width - x0)
            window = x[wy : min(height, y0 + h + margin), wx : min(width, x0 + w + margin)]
            yield Window(y0, x0, h, w, y0 - wy, x0 - wx), np.ascontiguousarray(window)


def tiled(
    batch: Batch, size: int, keys: list[str], where: str, margin: int = 0
) -> tuple[Batch, list[Window]]:
    """``batch`` with every image cut into tiles, each with ``margin`` pixels of context;
    ``keys`` are the images' own keys. The samples are the windows; ``Window`` says where each
    tile is in its window."""
    samples, ids, rows, places = [], [], [], []
    columns: dict[str, list[Any]] = {name: [] for name in batch.columns}
    for i, (key, x, row) in enumerate(zip(keys, batch.samples, batch.rows, strict=True)):
        if x.ndim not in (2, 3):
            raise InputError(where, f"--tile cuts images, this sample has shape {x.shape}", row=row)
        for place, t in windows(x, size, margin):
            samples.append(t)
            places.append(place)
            ids.append(tile_key(key, place.y, place.x))
            rows.append(row)
            for name, values in batch.columns.items():
                columns[name].append(values[i])
    return replace(batch, samples=samples, columns=columns, ids=ids, source_rows=rows), places


def by_image(batches: Iterable[LatentBatch]) -> Iterator[LatentBatch]:
    """Batches of tiles (dequantized) -> one batch per image: its tiles are consecutive rows."""
    rows: list[tuple[LatentBatch, int]] = []
    base: str | None = None

    def flush() -> LatentBatch:
        first, i0 = rows[0]
        return LatentBatch(
            first.uri,
            first.start + i0,
            [b.keys[i] for b, i in rows],
            [b.latents[i] for b, i in rows],
            [b.layouts[i] for b, i in rows],
            {name: [b.columns[name][i] for b, i in rows] for name in first.columns},
        )

    for batch in batches:
        for i, key in enumerate(batch.keys):
            parts = split_tile_key(key)
            if parts is None:
                raise InputError(
                    batch.uri, f"key {key!r} names no tile, in an archive of tiles", row=batch.start + i
                )
            if parts[0] != base and rows:
                yield flush()
                rows = []
            base = parts[0]
            rows.append((batch, i))
    if rows:
        yield flush()


def context_windows(
    image: LatentBatch, factor: int, reach: int
) -> list[tuple[np.ndarray, tuple[int, int]]] | None:
    """One image's tiles -> for each, its latents with up to ``reach`` cells of its neighbours'
    around them, and where its own pixels start in what they decode to. None where the tiles do
    not sit on one latent grid (a tile origin that is not a multiple of ``factor``)."""
    places = [split_tile_key(k) for k in image.keys]
    cells = []
    for p, z in zip(places, image.latents, strict=True):
        assert p is not None  # by_image checked the keys
        if p[1] % factor or p[2] % factor or z.ndim != 3:
            return None
        cells.append((p[1] // factor, p[2] // factor, z))
    grid = mosaic(cells, image.uri, image.keys[0])
    out = []
    for cy, cx, z in cells:
        y0, x0 = max(0, cy - reach), max(0, cx - reach)
        y1, x1 = min(grid.shape[1], cy + z.shape[1] + reach), min(grid.shape[2], cx + z.shape[2] + reach)
        out.append((grid[:, y0:y1, x0:x1], ((cy - y0) * factor, (cx - x0) * factor)))
    return out


def mosaic(cells: list[tuple[int, int, np.ndarray]], uri: str, key: str) -> np.ndarray:
    """Latents (C, h, w) at cell (y, x) -> one (C, H, W) grid; refuses holes and overlaps."""
    h = max(y + z.shape[1] for y, _, z in cells)
    w = max(x + z.shape[2] for _, x, z in cells)
    first = cells[0][2]
    grid = np.zeros((first.shape[0], h, w), first.dtype)
    covered = np.zeros((h, w), np.int32)
    for y, x, z in cells:
        if z.shape[0] != first.shape[0]:
            raise InputError(uri, f"the tiles of {key!r} have latents of different channels")
        grid[:, y : y + z.shape[1], x : x + z.shape[2]] = z
        covered[y : y + z.shape[1], x : x + z.shape[2]] += 1
    if not (covered == 1).all():
        raise InputError(uri, f"the tiles of {key!r} do not cover its latent grid exactly once")
    return grid


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
