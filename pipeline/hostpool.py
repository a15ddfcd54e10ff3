"""Host work on several cores: a batch's rows decoded and converted in a pool of threads.

A GPU worker's model is fast enough that one thread reading, decoding images and converting
them to model arrays cannot feed it. The slow parts (Pillow's decoders, zstd, numpy's casts
and file reads) release the GIL, so threads of one process scale with cores and hand their
results over without copying or pickling (measured: ``python -m jobs.bench --only host``).

    host_map(fn, items, workers)   [fn(x) for x in items], the items split into ``workers``
                                   contiguous runs done in parallel; results in order, and of
                                   several failures the one at the earliest item is raised
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        if workers not in _POOLS:  # one per process and size, kept for the process's life
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vaezip-host")
        return _POOLS[workers]


def host_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    n = min(workers, len(items))
    bounds = [len(items) * i // n for i in range(n + 1)]

    def run(lo: int, hi: int) -> list[R]:
        return [fn(items[i]) for i in range(lo, hi)]

    futures = [_pool(workers).submit(run, bounds[i], bounds[i + 1]) for i in range(n)]
    out: list[R] = []
    for f in futures:  # in order: the earliest run's error is the earliest item's
        out += f.result()
    return out
