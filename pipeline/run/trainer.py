"""Data-parallel training on Ray Train workers: the door to Ray Train, beside the runner's to Ray.

    driver: connect -> TorchTrainer(N workers: one GPU each on a GPU cluster, else one CPU;
            gloo on CPUs, NCCL on GPUs) -> each worker runs ``loop(spec, session)``
            -> the run's checkpoints kept under ``storage``/``name``; the latest comes back
    a run started again with the same storage and name resumes from its latest checkpoint

The loop (pipeline.train.stream.worker_loop) knows nothing of Ray: ``RaySession`` gives it
its rank, the data-parallel wrapper, the latest checkpoint and a way to report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.core.errors import ConfigError
from pipeline.run.runner import connect


class RaySession:
    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)

    def latest(self) -> str | None:
        checkpoint = ray.train.get_checkpoint()
        return checkpoint.to_directory(tempfile.mkdtemp(prefix="vz-resume-")) if checkpoint else None

    def report(self, metrics: dict, folder: str | None) -> None:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder) if folder else None)


def _run(config: dict) -> None:
    config["loop"](config["spec"], RaySession())


def fit(
    loop: Callable[[Any, Any], None],
    spec: Any,
    workers: int,
    storage: str,
    name: str,
    use_gpu: bool = False,
    address: str | None = None,
) -> tuple[str, dict]:
    """Train on ``workers`` Ray Train workers; (a local folder of the last checkpoint, the last
    metrics rank 0 reported)."""
    if workers < 1:
        raise ConfigError(f"--workers must be positive, got {workers}")
    connect(address)
    trainer = TorchTrainer(
        _run,
        train_loop_config={"loop": loop, "spec": spec},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=storage),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise ConfigError("training ended without a checkpoint")
    return result.checkpoint.to_directory(tempfile.mkdtemp(prefix="vz-trained-")), dict(result.metrics or {})
