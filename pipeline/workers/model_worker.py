"""What every model worker starts with: its threads, its device, and the checkpoint on it.

Workers are plain classes (model loaded once in ``__init__``, ``process(shard)`` does the
work); ``pipeline.run.runner`` makes them remote at dispatch, so a test can call them directly.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from pipeline.core import storage
from pipeline.core.errors import ConfigError
from pipeline.ledger.completion import Stopwatch
from pipeline.model.checkpoint import load_checkpoint
from pipeline.model.precision import name_of, pick_dtype


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("a CUDA device was asked for, but no CUDA GPU is visible")
    return torch.device(name)


def device_info(device: torch.device) -> dict[str, Any]:
    """Which accelerator this process was given (Ray sets CUDA_VISIBLE_DEVICES per actor)."""
    return {
        "pid": os.getpid(),
        "device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }


def _in_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def assigned_gpus() -> float | None:
    """The GPUs Ray reserved for this actor; None outside an actor."""
    try:
        import ray

        if _in_actor():
            return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0))
    except Exception:  # noqa: BLE001 - no Ray, or a Ray without the call
        pass
    return None


def assigned_cpus() -> int:
    """The CPUs Ray reserved for this actor (1 outside an actor, or where it reserved none)."""
    try:
        import ray

        if _in_actor():
            return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # noqa: BLE001 - no Ray, or a Ray without the call: one thread
        pass
    return 1


class ModelWorker:
    """The base of the encode, decode and feature workers."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        threads: int | None,
        precision: str = "auto",
        host_workers: int | None = None,
        host_pool: str = "processes",
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.clock = Stopwatch()  # time in model calls, for the shard being processed
        # a CPU actor on a GPU node keeps off the GPU it was not given (its "auto" is the CPU)
        self.device = pick_device("cpu" if device == "auto" and assigned_gpus() == 0 else device)
        self.dtype = pick_dtype(precision, self.device)
        # workers for the host's share (image decoding and encoding): the actor's CPUs
        self.host_workers = host_workers or assigned_cpus()
        self.host_pool = host_pool  # pipeline.core.hostpool: processes or threads
        self.ckpt = load_checkpoint(checkpoint, self.device)
        self.model = self.ckpt.model

    def sees(self, uri: str) -> bool:
        """Whether this actor's node sees ``uri``: the driver's marker in a local output folder,
        which a node that does not share the folder cannot see."""
        return storage.exists(uri)

    def info(self) -> dict[str, Any]:
        return {
            **device_info(self.device),
            "precision": name_of(self.dtype),
            "host_workers": self.host_workers,
            "host_pool": self.host_pool if self.host_workers > 1 else "in the reader's thread",
        }
