"""Host work on several cores: a batch's images decoded (and, on decode, encoded) in parallel.

A GPU worker's model is fast enough that one thread reading and decoding images cannot feed
it. The workers are a pool of processes (the default) or of threads (``--host-pool``):

- processes, ``spawn``ed once per worker process and size and kept for its life (they end
  when their parent does, even a killed one): Pillow's decoders release the GIL, but the
  Python around them (format probing, header checks, the array hand-over) does not, so a
  thread pool's share of the GIL caps one actor whatever its cores. Compressed bytes go in
  through one shared-memory segment per batch (``Blobs``) and pixels come back stacked in
  one segment per run; only names cross the pipe. The segments are the parent's, lent for
  the batch and kept for the next one (``_Arena``; the children keep them mapped), as a new
  segment's pages cost allocating, zeroing and faulting in. A segment's pages are reserved
  when it is made: where shared memory has no room (a container's ``/dev/shm`` is 64 MiB
  unless given more), that batch goes through the pipe instead, with a warning, rather than
  the writer dying of SIGBUS on a page the kernel cannot give.
- threads: nothing started, nothing copied; on 2 cores they come close to processes
  (``python -m jobs.bench --only host``), and they are the choice where starting processes
  is unwelcome.

    host_map(fn, items, workers, pool)          [fn(x) for x in items]
    host_submit(fn, items, workers, pool)       the same, started; ``Pending.result()`` waits
    host_submit_blobs(fn, blobs, first, ...)    fn((blob, first + i)) of each blob
    one_ahead(work)                             a reader's batches, each finished only once
                                                the next ones' work has been submitted

Items are split into contiguous runs, one per worker; results come back in order, and of
several failures the one at the earliest item is raised; when a result or an error is
handed out, nothing is left running and no segment is left lent (the arena's free ones go
when the reader is done). With one worker everything runs in the calling thread, when
``.result()`` is called. A process pool's ``fn`` must be picklable (a module-level function,
or a ``functools.partial`` of one), and a script that uses one directly needs the ``if
__name__ == "__main__":`` guard that ``spawn`` asks for (the jobs and Ray actors have it).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")

POOLS = ("processes", "threads")
_SHM = "/dev/shm"  # where POSIX shared memory lives on Linux
AHEAD = 2  # batches submitted ahead of the one handed out

_POOLS: dict[tuple[str, int], Executor] = {}
_LOCK = threading.Lock()
_WARNED: list[bool] = []  # the no-room warning, once per process
_ROW_BYTES = [0]  # the bytes of one result row last handed back stacked: the next runs' guess

log = logging.getLogger(__name__)


def _pool(kind: str, workers: int) -> Executor:
    with _LOCK:
        key = (kind, workers)
        if key not in _POOLS:  # one per process, kind and size, kept for the process's life
            if kind == "threads":
                _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="vaezip-host")
            else:  # spawn: a Ray worker has threads of its own, which a fork would copy mid-step
                _POOLS[key] = ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_follow_parent,
                    initargs=(os.getpid(),),
                )
        return _POOLS[key]


def _follow_parent(parent: int) -> None:
    """A host worker process ends when the process that started it is gone (a Ray actor that
    was killed never shuts its pool down, and the children would wait for work forever)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="vaezip-parent-watch").start()


class HostWorkerDied(RuntimeError):
    """A host worker process ended in the middle of a batch (killed, or out of memory; a full
    ``/dev/shm`` only slows a batch down, ``_segment``); the shard fails and can be retried,
    and the next batch gets a new pool."""


def _why_died() -> str:
    return (
        "a host worker process died in the middle of a batch (killed, or out of memory: each "
        "holds a run of the batch's images, decoded); --host-pool threads runs them in the "
        "worker's own process"
    )


def _forget(kind: str, workers: int) -> None:
    with _LOCK:
        _POOLS.pop((kind, workers), None)


def _run(fn: Callable[[T], R], run: Sequence[T]) -> list[R]:
    return [fn(x) for x in run]


def _path(name: str) -> str:
    """Where a segment's file is on Linux."""
    return os.path.join(_SHM, name.lstrip("/"))


def _segment(size: int) -> SharedMemory | None:
    """A new shared-memory segment of ``size`` bytes with its pages reserved, or None where
    shared memory has no room for it. Making a segment never fails for want of room (it is a
    sparse file), but writing a page the tmpfs cannot give kills the writer with SIGBUS, a
    Ray actor included; reserving the pages first (``posix_fallocate``) turns that into an
    error here, where the batch can take the pipe instead."""
    try:
        shm = SharedMemory(create=True, size=max(1, size))
    except OSError:
        return None
    path = _path(shm.name)
    if not hasattr(os, "posix_fallocate") or not os.path.exists(path):
        return shm  # not Linux's /dev/shm: nothing to reserve through
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, max(1, size))
        finally:
            os.close(fd)
    except OSError:
        shm.close()
        shm.unlink()
        return None
    return shm


def _no_room(size: int) -> None:
    """Log, once per process, that a batch went through the pipe for want of shared memory."""
    if _WARNED:
        return
    _WARNED.append(True)
    try:
        free = f"{shutil.disk_usage(_SHM).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "no room"
    log.warning(
        "shared memory (%s) has %s, and a batch needed %.1f MiB: its data goes through the "
        "host workers' pipes instead (slower). Give the container more (docker --shm-size, or "
        "shm_size in docker-compose.yml), or use --host-pool threads. Said once per process.",
        _SHM,
        free,
        size / 2**20,
    )


class _Piped(list):
    """A run's arrays sent back through the pipe, as shared memory had no room for them."""

    def __init__(self, arrays: list, nbytes: int) -> None:
        super().__init__(arrays)
        self.nbytes = nbytes


class _Arena:
    """This process's shared-memory segments, kept for the next batch once a batch is done
    with them: a new segment's pages must be allocated, zeroed and faulted in (in py-spy,
    reserving new segments and the first writes into them took about 7% of the host-only
    bench's children's samples). ``take`` hands out the smallest free segment that fits (at
    most twice the size asked) or makes one a quarter larger than asked, so that batches of
    slightly different sizes share; ``give`` takes it back, and keeps at
    most ``KEEP`` free segments holding no more than the most that was ever lent at once (the
    largest go first). The free ones are removed when a reader is done (``one_ahead``) and at
    exit; after a kill mid-shard, multiprocessing's resource tracker removes what it can."""

    KEEP = 64

    def __init__(self) -> None:
        self._free: list[SharedMemory] = []
        self._used: dict[str, SharedMemory] = {}
        self._holders: dict[str, int] = {}  # a lent segment's: its batch, and arrays viewing it
        self._peak = 0  # bytes lent at once, at most
        self._draining = False  # cleared, and no batch since: what comes back is removed
        self._lock = threading.Lock()

    def take(self, size: int) -> SharedMemory | None:
        with self._lock:
            self._draining = False
            fits = [m for m in self._free if size <= m.size <= 2 * max(size, 1 << 16)]
            if fits:
                shm = min(fits, key=lambda m: m.size)
                self._free.remove(shm)
                self._lend(shm)
                return shm
        made = _segment(size + size // 4)
        if made is not None:
            with self._lock:
                self._lend(made)
        return made

    def _lend(self, shm: SharedMemory) -> None:
        self._used[shm.name] = shm
        self._holders[shm.name] = 1
        self._peak = max(self._peak, sum(m.size for m in self._used.values()))

    def hold(self, name: str) -> SharedMemory | None:
        """The segment lent under ``name``, held once more (``give`` once for it), or None if
        this arena did not lend it."""
        with self._lock:
            shm = self._used.get(name)
            if shm is not None:
                self._holders[name] += 1
            return shm

    def give(self, shm: SharedMemory) -> None:
        """One holder of a lent segment is done with it; with the last, it is free again."""
        with self._lock:
            if self._holders.get(shm.name, 1) > 1:
                self._holders[shm.name] -= 1
                return
            self._holders.pop(shm.name, None)
            self._used.pop(shm.name, None)
            if self._draining:
                _remove(shm)
                return
            self._free.append(shm)
            self._free.sort(key=lambda m: m.size)
            extra = []
            while self._free and (
                len(self._free) > self.KEEP or sum(m.size for m in self._free) > self._peak
            ):
                extra.append(self._free.pop())
        for m in extra:
            _remove(m)

    def free(self) -> set[str]:
        """The names of the segments kept for reuse (none of them lent)."""
        with self._lock:
            return {m.name.lstrip("/") for m in self._free}

    def clear(self) -> None:
        """Remove the free segments, and each lent one as soon as it comes back (until the
        next ``take``)."""
        with self._lock:
            self._draining = True
            gone, self._free = self._free, []
        for m in gone:
            _remove(m)


def _remove(shm: SharedMemory) -> None:
    shm.close()
    shm.unlink()


_ARENA = _Arena()
atexit.register(_ARENA.clear)

# In a host worker process: its parent's arena segments, kept mapped, as the parent lends the
# same ones batch after batch (a new mapping faults its pages in again). A mapping is let go as
# soon as its name no longer names the same file (its inode): a removed segment's memory is
# not held past the worker's next task, and a name made anew is mapped afresh. At most 16, and
# ATTACHED_BYTES, are kept.
_ATTACHED: dict[str, tuple[SharedMemory, int]] = {}
ATTACHED_BYTES = 256 << 20


def _inode(name: str) -> int | None:
    try:
        return os.stat(_path(name)).st_ino
    except OSError:
        return None  # removed, or not Linux's /dev/shm


def _attach(name: str) -> SharedMemory:
    for held, (m, was) in list(_ATTACHED.items()):
        if _inode(held) != was:
            del _ATTACHED[held]
            m.close()
    now = _inode(name)
    shm = _ATTACHED.pop(name, (None, 0))[0] or SharedMemory(name=name)
    if now is None:
        return shm  # not kept: closed when dropped
    _ATTACHED[name] = (shm, now)  # the most recent last
    while len(_ATTACHED) > 1 and (
        len(_ATTACHED) > 16 or sum(m.size for m, _ in _ATTACHED.values()) > ATTACHED_BYTES
    ):
        _ATTACHED.pop(next(iter(_ATTACHED)))[0].close()
    return shm


class _Stacked:
    """A run's arrays of one shape and dtype, handed back through shared memory: the child
    writes them into the segment its parent lent for the run (or, if they do not fit, a new
    one) and sends its name; the parent hands out views of a lent segment, and copies a new
    one out and removes it. Pickled through the pool's pipe, 64x64 crops put about 16% of a
    child's samples and 8% of the parent's into pickling and pipe transfer (py-spy, the
    host-only bench); this way only the name crosses."""

    def __init__(self, arrays: list[np.ndarray], shm: SharedMemory, lent: bool = False) -> None:
        first = arrays[0]
        self.shape, self.dtype = (len(arrays), *first.shape), first.dtype
        self.lent = lent  # the parent's segment (its arena's), lent for this run: not removed
        try:
            np.stack(arrays, out=np.ndarray(self.shape, self.dtype, buffer=shm.buf))
        except BaseException:
            if not lent:
                _remove(shm)
            raise
        self.name = shm.name
        if not lent:
            shm.close()

    def take(self) -> list[np.ndarray]:
        """The arrays: in a lent segment, views of it, which holds it until they are all gone
        (no copy); else copied out of the segment, which is then removed."""
        lent = _ARENA.hold(self.name) if self.lent else None
        if lent is not None:
            array = np.ndarray(self.shape, self.dtype, buffer=lent.buf)
            weakref.finalize(array, _ARENA.give, lent)
        else:
            shm = SharedMemory(name=self.name)
            try:
                array = np.ndarray(self.shape, self.dtype, buffer=shm.buf).copy()
            finally:
                _remove(shm)
        _ROW_BYTES[0] = array[0].nbytes
        return list(array)


def _run_packed(
    fn: Callable[[T], R], run: Sequence[T], into: tuple[str, int] | None = None
) -> list[R] | _Stacked:
    """``_run``, with the results stacked into shared memory when they are arrays of one shape
    and dtype: into the parent's segment ``into`` (name, size) when they fit, else a new one."""
    out = _run(fn, run)
    first = out[0] if out else None
    if (
        isinstance(first, np.ndarray)
        and first.nbytes
        and all(isinstance(a, np.ndarray) and a.shape == first.shape and a.dtype == first.dtype for a in out)
    ):
        size = len(out) * first.nbytes
        if into is not None and size <= into[1]:
            return _Stacked(out, _attach(into[0]), lent=True)  # type: ignore[arg-type]
        shm = _segment(size)
        if shm is None:
            return _Piped(out, size)
        return _Stacked(out, shm)  # type: ignore[arg-type]
    return out


def _unpacked(part: list[R] | _Stacked) -> list[R]:
    if isinstance(part, _Piped):
        _no_room(part.nbytes)
    return part.take() if isinstance(part, _Stacked) else part  # type: ignore[return-value]


class Pending(Generic[R]):
    """A batch's results on their way; ``result()`` returns them in order. Whatever happens,
    when ``result()`` or ``discard()`` returns, every part has finished or been cancelled and
    every shared-memory segment is gone or back in the arena: an error leaves nothing running
    or lent behind it."""

    def __init__(
        self,
        parts: list[Future[list[R] | _Stacked]] | Callable[[], list[R]],
        kind: str = "",
        workers: int = 0,
        cleanup: Callable[[], None] | None = None,
    ):
        self._parts, self._kind, self._workers, self._cleanup = parts, kind, workers, cleanup

    def result(self) -> list[R]:
        if callable(self._parts):
            return self._parts()
        out: list[R] = []
        taken = 0
        try:
            for f in self._parts:  # in order: the earliest run's error is the earliest item's
                out += _unpacked(f.result())
                taken += 1
        except BrokenProcessPool as err:  # a child died (killed, out of memory): a new pool next time
            _forget(self._kind, self._workers)
            raise HostWorkerDied(_why_died()) from err
        finally:
            self._settle(self._parts[taken:])
        return out

    def discard(self) -> None:
        """Not wanted after all: what has not started is cancelled, the rest waited for and
        freed."""
        if not callable(self._parts):
            self._settle(self._parts)

    def _settle(self, rest: list[Future[list[R] | _Stacked]]) -> None:
        for f in rest:
            f.cancel()
        wait(rest)
        for f in rest:
            if not f.cancelled() and f.exception() is None:
                _unpacked(f.result())  # a segment it holds is freed
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None


def _bounds(items: int, workers: int) -> list[int]:
    """Where the contiguous runs of ``items`` start and end, one run per worker."""
    n = min(workers, items)
    return [items * i // n for i in range(n + 1)]


def host_submit(fn: Callable[[T], R], items: Sequence[T], workers: int, pool: str = "threads") -> Pending[R]:
    if pool not in POOLS:
        raise ValueError(f"unknown host pool {pool!r}; expected one of {POOLS}")
    if workers <= 1 or len(items) < 2:
        return Pending(lambda: _run(fn, items))
    bounds = _bounds(len(items), workers)
    executor = _pool(pool, workers)
    run = _run_packed if pool == "processes" else _run
    parts = [executor.submit(run, fn, list(items[a:b])) for a, b in itertools.pairwise(bounds)]
    return Pending(parts, pool, workers)


@dataclass(frozen=True)
class Blobs:
    """Byte strings laid end to end (an Arrow binary column's buffers): blob ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``."""

    data: memoryview
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


def _run_shared(
    fn: Callable[[tuple[bytes, int]], R],
    name: str,
    offsets: np.ndarray,
    first: int,
    into: tuple[str, int] | None = None,
) -> list[R] | _Stacked:
    buf = _attach(name).buf
    assert buf is not None
    try:  # each blob copied out, so no view of the segment outlives it (an error's traceback)
        items = [(bytes(buf[offsets[i] : offsets[i + 1]]), first + i) for i in range(len(offsets) - 1)]
    finally:
        del buf
    return _run_packed(fn, items, into)


def host_submit_blobs(
    fn: Callable[[tuple[bytes | memoryview, int]], R],
    blobs: Blobs,
    first: int,
    workers: int,
    pool: str = "threads",
) -> Pending[R]:
    """``host_submit(fn, [(blob, first + i) for i, blob in enumerate(blobs)], ...)``; a process
    pool gets the blobs through one shared-memory segment (written once, read by every child,
    removed when all are done) instead of pickling each through a pipe."""
    if pool != "processes" or workers <= 1 or len(blobs) < 2:
        return host_submit(fn, [(blobs[i], first + i) for i in range(len(blobs))], workers, pool)
    lo, hi = int(blobs.offsets[0]), int(blobs.offsets[-1])
    shm = _ARENA.take(hi - lo)
    if shm is None:  # no room in shared memory: the blobs go through the pipe
        _no_room(hi - lo)
        return host_submit(fn, [(bytes(blobs[i]), first + i) for i in range(len(blobs))], workers, pool)
    lent = [shm]  # given back to the arena once every run is done with them
    try:
        assert shm.buf is not None
        shm.buf[: hi - lo] = blobs.data[lo:hi]
    except BaseException:
        _ARENA.give(shm)
        raise
    bounds = _bounds(len(blobs), workers)
    executor = _pool(pool, workers)
    offsets = blobs.offsets.astype(np.int64) - lo
    parts: list[Future] = []

    def give_back() -> None:
        for m in lent:
            _ARENA.give(m)

    try:
        for a, b in itertools.pairwise(bounds):
            out = _ARENA.take((b - a) * _ROW_BYTES[0]) if _ROW_BYTES[0] else None
            if out is not None:
                lent.append(out)
            into = (out.name, out.size) if out is not None else None
            parts.append(executor.submit(_run_shared, fn, shm.name, offsets[a : b + 1], first + a, into))
    except BaseException:
        Pending(parts, pool, workers, cleanup=give_back).discard()
        raise
    return Pending(parts, pool, workers, cleanup=give_back)


def host_map(fn: Callable[[T], R], items: Sequence[T], workers: int, pool: str = "threads") -> list[R]:
    return host_submit(fn, items, workers, pool).result()


def one_ahead(work: Iterator[tuple[Pending[T], Callable[[list[T]], R]]]) -> Iterator[R]:
    """``finish(pending.result())`` for each (pending, finish) of ``work``, each only once the
    next ``AHEAD`` have been submitted: a reader that submits a batch's decoding as it makes
    the pair keeps its pool busy while the consumer works on the batches before. An error
    making the next pair is raised after the batch before it is handed out, so errors surface
    in row order; a consumer that stops early leaves nothing behind (the batch in flight is
    discarded)."""
    inflight: list[tuple[Pending[T], Callable[[list[T]], R]]] = []  # submitted, not handed out
    it = iter(work)
    try:
        while True:
            try:
                inflight.append(next(it))
            except StopIteration:
                break
            except BaseException:
                if inflight:
                    pending, finish = inflight.pop(0)
                    yield finish(pending.result())
                raise
            if len(inflight) > AHEAD:
                pending, finish = inflight.pop(0)
                yield finish(pending.result())
        while inflight:
            pending, finish = inflight.pop(0)
            yield finish(pending.result())
    finally:
        for pending, _ in inflight:
            pending.discard()
        # a reader's segments live as long as it reads: a Ray actor that is killed later
        # (its exit hooks never run) leaves none of them in /dev/shm
        _ARENA.clear()
