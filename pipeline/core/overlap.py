"""The threads a worker runs so that the model never waits on reading or writing.

    prefetch(make)        a reader thread runs ``make()`` a few items ahead of the consumer
    one_behind(items, f)  a writer thread runs ``f(item)`` on the previous item while the
                          loop over ``items`` (the model) makes the next one

    reader thread --items--> this thread (model) --items--> writer thread

Errors on either side surface in the worker's own thread, in order, so a bad row fails its
shard exactly as it would without the threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetch(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Run ``make()`` in a thread, ``depth`` items ahead, so reading overlaps the model.

    Errors raised by the producer are re-raised in the consumer, in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            q.put(err)

    t = threading.Thread(target=produce, daemon=True, name="vaezip-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


def one_behind(items: Iterable[T], work: Callable[[T], R]) -> list[R]:
    """``[work(item) for item in items]``, with ``work`` in a writer thread one item behind
    the loop that produces ``items``: at most one item in flight, results in order, and the
    first error raised where the loop stands."""
    results: list[R] = []
    with ThreadPoolExecutor(1, thread_name_prefix="vaezip-write") as pool:
        pending: Future[R] | None = None
        for item in items:
            if pending is not None:
                results.append(pending.result())
            pending = pool.submit(work, item)
        if pending is not None:
            results.append(pending.result())
    return results
