"""Training where the data lives: shards streamed from the input, a share per worker.

    input URI -> its data files (as the encode lists them) -> this worker's share: every
    world-th file of a seeded order, a new order each pass -> iter_batches -> model arrays
    (random crops with ``crop``) -> a shuffle buffer -> batches
    worker loop: model + Adam (made data-parallel by the session) -> ``max_steps`` steps
    -> a checkpoint every ``checkpoint_every`` steps and at the end: weights and optimizer
       state as safetensors, the step as JSON -> a run started again resumes from the latest

Every worker takes the same number of steps (the data is cycled), so none waits at the end
for one that ran out; a resumed run continues the step count with a data order seeded by it.
The loop knows nothing of Ray: ``Session`` is what the launcher (pipeline.run.trainer) gives
it, so a test can run it with a session of its own.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.value_range import ValueRange
from pipeline.data.readers import ReadOptions, iter_batches, list_sources
from pipeline.model.elbo import elbo_terms
from pipeline.model.nets import VAE, build_model, config_from_dict
from pipeline.model.rd_loss import rd_terms
from pipeline.train.dataset import RawSample, random_crops, stack_for_model
from pipeline.train.training import RD_CLIP_NORM, TrainSettings

log = logging.getLogger(__name__)

WEIGHTS, OPTIMIZER, STATE = "model.safetensors", "optimizer.safetensors", "state.json"


class Session(Protocol):
    rank: int
    world: int

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this worker's device, wrapped for data-parallel training."""
        ...

    def latest(self) -> str | None:
        """A local folder holding the latest checkpoint of this run, if any."""
        ...

    def report(self, metrics: dict, folder: str | None) -> None:
        """Metrics, and (rank 0) a checkpoint folder to keep."""
        ...


@dataclass(frozen=True)
class StreamSpec:
    input: str
    model: dict  # the model's config, as a checkpoint stores it
    settings: TrainSettings  # max_steps is the budget
    read: ReadOptions = ReadOptions()
    value_range: tuple[float, float] | None = None
    crop: int | None = None
    crops_per_image: int | None = None
    checkpoint_every: int = 100
    shuffle_buffer: int = 2048


def my_files(files: list[str], rank: int, world: int, seed: int, rounds: int) -> list[str]:
    """This worker's files for pass ``rounds``: every world-th of a seeded order (all of
    them, in turn, when there are fewer files than workers)."""
    order = np.random.default_rng([seed, rounds]).permutation(len(files))
    picked = order[rank::world] if len(files) >= world else order[[(rank + rounds) % len(files)]]
    return [files[i] for i in picked]


def stream_batches(spec: StreamSpec, rank: int, world: int, start_step: int) -> Iterator[np.ndarray]:
    """Endless batches of model arrays from this worker's share of the input."""
    config = config_from_dict(spec.model)
    value_range = ValueRange(*spec.value_range) if spec.value_range else None
    files = list_sources(spec.input)
    batch = spec.settings.batch_size
    rng = np.random.default_rng([spec.settings.seed, rank, start_step])
    buffer: list[np.ndarray] = []
    rounds = start_step  # a resumed run sees another order than the one it stopped in
    while True:
        for source in my_files(files, rank, world, spec.settings.seed, rounds):
            for b in iter_batches(source, spec.read):
                samples = [RawSample(b.source, r, a) for r, a in zip(b.rows, b.samples, strict=True)]
                if spec.crop:
                    seed = int(rng.integers(1 << 31))
                    samples = random_crops(samples, spec.crop, spec.crops_per_image, seed)
                arrays, _ = stack_for_model(samples, config, value_range)
                buffer.extend(arrays)
                while len(buffer) >= max(batch, spec.shuffle_buffer):  # a batch drawn from the buffer
                    take = rng.choice(len(buffer), size=batch, replace=False)
                    yield np.stack([buffer[i] for i in take])
                    for i in sorted(take.tolist(), reverse=True):
                        buffer[i] = buffer[-1]
                        buffer.pop()
        rounds += 1


def _save(folder: str, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    os.makedirs(folder, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, f"{folder}/{WEIGHTS}"
    )
    state = opt.state_dict()
    tensors = {
        f"{i}.{name}": t.detach().cpu().contiguous()
        for i, slots in state["state"].items()
        for name, t in slots.items()
        if isinstance(t, torch.Tensor)
    }
    save_file(tensors, f"{folder}/{OPTIMIZER}")
    with open(f"{folder}/{STATE}", "w") as f:
        json.dump({"step": step, "param_groups": state["param_groups"]}, f)


def _load(folder: str, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Weights and optimizer state from a checkpoint folder (safetensors and JSON: nothing is
    unpickled); returns its step."""
    model.load_state_dict(load_file(f"{folder}/{WEIGHTS}"))
    with open(f"{folder}/{STATE}") as f:
        meta = json.load(f)
    slots: dict[int, dict[str, Any]] = {}
    for key, t in load_file(f"{folder}/{OPTIMIZER}").items():
        i, name = key.split(".", 1)
        slots.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def weights_digest(model: torch.nn.Module) -> float:
    """One number that differs when any weight differs: workers compare it to show they are
    in sync (a sum of every weight times a fixed pseudo-random factor, in float64)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(model.parameters()):
        g = torch.Generator().manual_seed(i)
        total += (
            p.detach().cpu().double().flatten() * torch.rand(p.numel(), generator=g, dtype=torch.float64)
        ).sum()
    return float(total)


class Objective(torch.nn.Module):
    """The model with its training loss as ``forward``: what a data-parallel wrapper calls, so
    the gradients of every worker are averaged in the backward pass."""

    def __init__(self, model: VAE, settings: TrainSettings) -> None:
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        s = self.settings
        if s.objective == "rd":
            return rd_terms(self.model, x).loss(s.lmbda)  # type: ignore[arg-type]
        warm = min(1.0, step / s.warmup_steps) if s.warmup_steps else 1.0
        return elbo_terms(self.model, x).loss(s.beta * warm)


def worker_loop(spec: StreamSpec, session: Session) -> None:
    """One worker's training: the same on every worker, with its own share of the data."""
    settings = spec.settings
    assert settings.max_steps, "streamed training runs for a number of steps"
    torch.manual_seed(settings.seed)  # every worker starts from the same weights
    model = build_model(config_from_dict(spec.model))
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    step = 0
    latest = session.latest()
    if latest is not None:
        step = _load(latest, model, opt)
        log.info("worker %d resumes at step %d", session.rank, step)
    resumed_from = step
    net = session.prepare(Objective(model, settings))
    device = next(net.parameters()).device
    rd = settings.objective == "rd"
    batches = stream_batches(spec, session.rank, session.world, step)
    while step < settings.max_steps:
        net.train()
        loss = net(torch.from_numpy(next(batches)).to(device), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # data-parallel: the session's wrapper averages the gradients here
        if rd:
            torch.nn.utils.clip_grad_norm_(net.parameters(), RD_CLIP_NORM)
        opt.step()
        step += 1
        if step % spec.checkpoint_every == 0 or step == settings.max_steps:
            digest = _agreed_digest(model, session.world)
            metrics = {
                "step": step,
                "loss": float(loss.detach()),
                "digest": digest,
                "resumed_from": resumed_from,
            }
            if session.rank == 0:
                folder = os.path.join(tempfile.gettempdir(), f"vz-train-{os.getpid()}-{step}")
                _save(folder, model, opt, step)
                session.report(metrics, folder)
            else:
                session.report(metrics, None)


def _agreed_digest(model: torch.nn.Module, world: int) -> float:
    """This worker's weights digest, checked against every other worker's: NaN if they differ."""
    digest = weights_digest(model)
    if world > 1 and torch.distributed.is_initialized():
        mine = torch.tensor([digest], dtype=torch.float64, device=next(model.parameters()).device)
        lo, hi = mine.clone(), mine.clone()
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        if float(hi - lo) != 0.0:
            return float("nan")
    return digest
