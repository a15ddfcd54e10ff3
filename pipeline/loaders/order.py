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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Piece:
    """Rows ``start`` to ``stop`` of file ``file`` (an index into the archive's files)."""

    file: int
    start: int
    stop: int


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
    total = sum(rows)
    if total == 0 or hi <= lo:
        return []
    out: list[Piece] = []
    base = (lo // total) * total  # wrapped: the stream again from its start
    while lo < hi:
        pos = base
        for f in order:
            a, b = pos, pos + rows[f]
            s, e = max(a, lo), min(b, hi)
            if s < e:
                out.append(Piece(f, s - a, e - a))
                lo = e
            pos = b
            if lo >= hi:
                break
        base += total
    return out


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
