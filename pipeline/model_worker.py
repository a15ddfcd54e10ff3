"""What every model worker starts with: its threads, its device, and the checkpoint on it.

Workers are plain classes (model loaded once in ``__init__``, ``process(shard)`` does the
work); ``pipeline.runner`` makes them remote at dispatch, so a test can call them directly.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.completion import Stopwatch
from pipeline.errors import ConfigError


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


class ModelWorker:
    """The base of the encode, decode and feature workers."""

    def __init__(self, checkpoint: str, device: str, threads: int | None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.clock = Stopwatch()  # time in model calls, for the shard being processed
        self.device = pick_device(device)
        self.ckpt = load_checkpoint(checkpoint, self.device)
        self.model = self.ckpt.model

    def info(self) -> dict[str, Any]:
        return device_info(self.device)
