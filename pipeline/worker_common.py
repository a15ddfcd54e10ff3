"""What the encode and decode workers share: device choice, a prefetching reader, results."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.errors import ConfigError, InputError

log = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class ShardResult:
    """What a worker reports for one shard: a bad shard is a value, not a crash."""

    name: str
    source: str
    ok: bool
    rows: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    clipped: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0     # of ``seconds``, in the model (encoder or decoder) calls
    error: str | None = None
    retryable: bool = False
    attempts: int = 1


def failed(name: str, source: str, err: InputError, start: float) -> ShardResult:
    """A shard that failed with ``err``, logged with its name."""
    log.warning("shard %s failed: %s", name, err)
    return ShardResult(name, source, ok=False, error=str(err), retryable=err.retryable,
                       seconds=time.perf_counter() - start)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("a CUDA device was asked for, but no CUDA GPU is visible")
    return torch.device(name)


def device_info(device: torch.device) -> dict[str, Any]:
    """Which accelerator this process was given (Ray sets CUDA_VISIBLE_DEVICES per actor)."""
    return {"pid": os.getpid(), "device": str(device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads()}


class ModelWorker:
    """What every worker starts with: its threads, its device, and the checkpoint on it."""

    def __init__(self, checkpoint: str, device: str, threads: int | None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model_seconds = 0.0      # time in model calls, for the shard being processed
        self.device = pick_device(device)
        self.ckpt = load_checkpoint(checkpoint, self.device)
        self.model = self.ckpt.model

    def info(self) -> dict[str, Any]:
        return device_info(self.device)


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


class HashingWriter:
    """A write-only file wrapper that counts bytes and hashes them on the way through."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256, self.bytes, self.closed = f, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        self.f.write(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.closed = True
