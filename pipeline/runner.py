"""The one module that talks to Ray: a pool of worker actors that pull shard descriptors.

    driver: connect -> size the pool from cluster resources -> actors (num_gpus=1 each on a
            GPU cluster, else num_cpus=threads) -> keep every actor busy with one shard
            -> results come back as values; a dead actor's shard goes to another actor

The driver hands out ``Shard`` descriptors and parameters, never data. Workers are plain
classes made remote here, at dispatch, so tests can call them without Ray. On a small machine
the pool never reserves more CPUs than the cluster has: two 1-CPU actors plus anything else
that needs a CPU would otherwise wait forever.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipeline.errors import ConfigError
from pipeline.plan import Shard
from pipeline.worker_common import ShardResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    actors: int | None = None         # default: from the cluster's resources
    threads_per_actor: int = 1        # CPU threads (and Ray CPUs) per actor
    use_gpus: bool = True             # one GPU per actor when the cluster has GPUs
    max_attempts: int = 3             # per shard, for failures that can pass
    address: str | None = None        # Ray address; None: RAY_ADDRESS or a local Ray

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"actors must be positive, got {self.actors}")
        if self.threads_per_actor < 1 or self.max_attempts < 1:
            raise ConfigError("threads_per_actor and max_attempts must be positive")


def connect(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {err}") from err


@dataclass(frozen=True)
class PoolShape:
    actors: int
    num_cpus: int
    num_gpus: int


def pool_shape(config: PoolConfig, resources: dict[str, float]) -> PoolShape:
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if config.use_gpus and gpus > 0:
        n = config.actors or gpus
        if n > gpus:
            raise ConfigError(f"{n} GPU actors asked for, the cluster has {gpus} GPUs")
        # A GPU actor takes one CPU for its host-side work, when the cluster can spare it.
        return PoolShape(n, 1 if cpus >= 2 * n else 0, 1)
    per = config.threads_per_actor
    n = config.actors or max(1, cpus // per)
    if n * per > cpus:
        raise ConfigError(f"{n} actors x {per} threads need {n * per} CPUs, the cluster has "
                          f"{cpus}; lower --actors or --threads")
    return PoolShape(n, per, 0)


class Pool:
    """Actors of one worker class; ``map`` streams shard results as they finish."""

    def __init__(self, worker_cls: type, spec: Any, config: PoolConfig) -> None:
        connect(config.address)
        self.config = config
        self.shape = pool_shape(config, ray.cluster_resources())
        self._remote = ray.remote(worker_cls).options(
            num_cpus=self.shape.num_cpus, num_gpus=self.shape.num_gpus, max_restarts=0)
        self.spec = spec
        self.actors = [self._remote.remote(spec) for _ in range(self.shape.actors)]
        # Wait until every actor has loaded its model, so throughput excludes start-up.
        self.infos = self.call_all("info")
        log.info("pool: %d x %s (num_cpus=%d, num_gpus=%d) on %s", self.shape.actors,
                 worker_cls.__name__, self.shape.num_cpus, self.shape.num_gpus,
                 [i["device"] for i in self.infos])

    def call_one(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        try:
            return ray.get(getattr(self.actors[0], method).remote(*args), timeout=timeout_s)
        except RayTaskError as err:
            raise err.as_instanceof_cause() from None
        except GetTimeoutError as err:
            raise ConfigError(f"{method} did not answer in {timeout_s} s") from err

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def map(self, shards: list[Shard], *args: Any,
            method: str = "process") -> Iterator[ShardResult]:
        todo: deque[tuple[Shard, int]] = deque((s, 1) for s in shards)
        idle = list(self.actors)
        running: dict[Any, tuple[Any, Shard, int]] = {}
        while todo or running:
            while idle and todo:
                actor = idle.pop()
                shard, attempt = todo.popleft()
                running[getattr(actor, method).remote(shard, *args)] = (actor, shard, attempt)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, shard, attempt = running.pop(ref)
            try:
                result: ShardResult = ray.get(ref)
            except RayActorError as err:
                # The process died (killed, OOM, node lost): replace it and try the shard again.
                log.warning("actor died on shard %s (attempt %d): %s", shard.name, attempt, err)
                fresh = self._remote.remote(self.spec)
                self.actors.append(fresh)
                idle.append(fresh)
                if attempt < self.config.max_attempts:
                    todo.append((shard, attempt + 1))
                else:
                    yield ShardResult(shard.name, shard.source, ok=False, attempts=attempt,
                                      error=f"worker died {attempt} times: {err}")
                continue
            except RayTaskError as err:
                cause = err.as_instanceof_cause()
                idle.append(actor)
                if attempt < self.config.max_attempts and getattr(cause, "retryable", True):
                    log.warning("shard %s failed (attempt %d), retrying: %s", shard.name, attempt, cause)
                    todo.append((shard, attempt + 1))
                else:
                    yield ShardResult(shard.name, shard.source, ok=False, attempts=attempt,
                                      error=f"{type(cause).__name__}: {cause}")
                continue
            idle.append(actor)
            if not result.ok and result.retryable and attempt < self.config.max_attempts:
                todo.append((shard, attempt + 1))
                continue
            yield replace(result, attempts=attempt)

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def run(worker_cls: type, spec: Any, config: PoolConfig,
        body: Callable[[Pool], Any]) -> Any:
    pool = Pool(worker_cls, spec, config)
    try:
        return body(pool)
    finally:
        pool.close()
