"""Which rows of an archive each (rank, DataLoader worker) reads in one epoch, and in what order:
plain arithmetic over the manifest's row counts, no I/O, so every rank works out the same
split without talking to the others.

    files in order, or permuted per (seed, epoch)  ->  one stream of rows
    -> cut into world x workers units, contiguous: unit r * workers + w is rank r's worker
       w's (a rank's rows are its workers' units together, so a file is read by at most the
       units its rows fall into)
    -> the remainder (``REMAINDERS``): "pad" wraps the stream round to fill the last units (as
       PyTorch's DistributedSampler pads), "drop" leaves it out, "keep" gives the first units
       one row more (every row exactly once; the units then differ by one row)

With "pad" and "drop" every unit gets the same number of rows, so every rank gets the same
number of rows and, for a batch size, the same number of batches: DDP never waits at the end
of an epoch for a rank that has run out.

An archive of several latent shapes (buckets) is batched one shape at a time, so equal rows
are not equal batches: ``bucket_pieces`` cuts each shape's rows apart, into units of whole
batches ("drop": as many as every unit can have; "pad": enough for the last rows, wrapped
round), from each file's count of rows of each shape. A unit's pieces are then read in file
order, each file once a lap, its rows of a shape counted among themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Piece:
    """Rows ``start`` to ``stop`` of file ``file`` (an index into the archive's files); with a
    ``shape``, of that file's rows of that latent shape only, counted among themselves. ``lap``:
    how many times round the stream was wrapped before it ("pad")."""

    file: int
    start: int
    stop: int
    shape: tuple[int, ...] | None = None
    lap: int = 0


def file_order(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(n))
    return [int(i) for i in np.random.default_rng([seed, epoch, 0]).permutation(n)]


REMAINDERS = ("pad", "drop", "keep")


def unit_bounds(total: int, units: int, unit: int, remainder: str) -> tuple[int, int]:
    """Where ``unit``'s rows start and stop in the stream (past ``total``: wrapped round)."""
    if remainder == "keep":
        base, extra = divmod(total, units)
        start = unit * base + min(unit, extra)
        return start, start + base + (1 if unit < extra else 0)
    per = total // units if remainder == "drop" else -(-total // units)
    return unit * per, (unit + 1) * per


def unit_pieces(rows: list[int], order: list[int], lo: int, hi: int) -> list[Piece]:
    """The pieces of files that make up rows ``lo`` to ``hi`` of the stream ``order`` makes,
    the stream wrapped round where they lie past its end."""
    return [p for _, p in _walk(rows, order, lo, hi)]


def _walk(rows: list[int], order: list[int], lo: int, hi: int) -> Iterator[tuple[tuple[int, int], Piece]]:
    """``unit_pieces`` with each piece's place in the reading: (lap, place in ``order``)."""
    total = sum(rows)
    if total == 0 or hi <= lo:
        return
    lap = lo // total  # wrapped: the stream again from its start
    while lo < hi:
        pos = lap * total
        for place, f in enumerate(order):
            a, b = pos, pos + rows[f]
            s, e = max(a, lo), min(b, hi)
            if s < e:
                yield (lap, place), Piece(f, s - a, e - a, lap=lap)
                lo = e
            pos = b
            if lo >= hi:
                break
        lap += 1


def shape_bounds(total: int, units: int, unit: int, batch: int, remainder: str) -> tuple[int, int]:
    """Where ``unit``'s rows of one shape start and stop among that shape's ``total`` rows:
    whole batches, as many on every unit ("drop": the most each can have; "pad": enough for
    every row, past ``total`` wrapped round), or every row once ("keep", as ``unit_bounds``)."""
    if remainder == "keep":
        return unit_bounds(total, units, unit, "keep")
    whole = total // (units * batch) if remainder == "drop" else -(-total // (units * batch))
    return unit * whole * batch, (unit + 1) * whole * batch


def bucket_pieces(
    counts: list[dict[tuple[int, ...], int]],
    order: list[int],
    units: int,
    unit: int,
    batch: int,
    remainder: str,
) -> list[Piece]:
    """``unit``'s pieces when batches hold one latent shape: ``counts[f]`` is file ``f``'s rows
    of each shape. Each shape's rows are a stream of their own, cut into ``units`` equal runs of
    whole batches ("drop": the most every unit can have; "pad": enough to hold every row,
    wrapped round; "keep": every row once, as ``unit_bounds`` cuts it), so with "drop" and "pad"
    every unit gets the same number of batches of every shape. The pieces come in reading
    order: a file's pieces of every shape together."""
    keyed = []
    for shape in sorted({s for c in counts for s in c}):
        rows = [c.get(shape, 0) for c in counts]
        lo, hi = shape_bounds(sum(rows), units, unit, batch, remainder)
        keyed += [(key, replace(p, shape=shape)) for key, p in _walk(rows, order, lo, hi)]
    keyed.sort(key=lambda kp: kp[0])  # stable: within a file, the shapes in their order
    return [p for _, p in keyed]


def shuffled(items: Iterator, buffer: int, rng: np.random.Generator) -> Iterator:
    """``items`` through a shuffle buffer of ``buffer`` places: each one out is a random one of
    the last ``buffer`` in (what a stream can afford; the file order is shuffled as well)."""
    held: list = []
    for item in items:
        if len(held) < buffer:
            held.append(item)
            continue
        i = int(rng.integers(len(held)))
        held[i], item = item, held[i]
        yield item
    for i in rng.permutation(len(held)):
        yield held[int(i)]
