"""The one module that talks to Ray: a pool of worker actors that pull shard descriptors.

    driver: connect -> size the pool from cluster resources -> actors (num_gpus=1 each on a
            GPU cluster, else num_cpus=threads) -> keep ``in_flight`` shards queued at every
            actor (it starts the next the moment it finishes one, no round trip between)
            -> results come back as values; a dead actor's shards go to another actor

The driver hands out ``Shard`` descriptors and parameters, never data. Workers are plain
classes made remote here, at dispatch, so tests can call them without Ray. On a small machine
the pool never reserves more CPUs than the cluster has: two 1-CPU actors plus anything else
that needs a CPU would otherwise wait forever.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipeline.core.errors import ConfigError, VaezipError
from pipeline.ledger.completion import ShardResult
from pipeline.ledger.shard import Shard
from pipeline.run import reaper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    actors: int | None = None  # default: from the cluster's resources
    threads_per_actor: int = 1  # CPU threads (and Ray CPUs) per CPU actor
    actors_per_gpu: int = 1  # GPU actors sharing one GPU (each asks for 1/N of it)
    use_gpus: bool = True  # one GPU per actor when the cluster has GPUs
    require_gpus: bool = False  # fail, rather than run on CPUs, when it has none
    in_flight: int = 2  # shards handed to an actor at once: it runs one, the next waits there
    max_attempts: int = 3  # per shard, for failures that can pass
    retry_backoff_s: float = 0.5  # wait before a retry, doubled per attempt
    start_timeout_s: float = 300.0  # give up when no actor can start for this long
    address: str | None = None  # Ray address; None: RAY_ADDRESS or a local Ray

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"actors must be positive, got {self.actors}")
        if min(self.threads_per_actor, self.max_attempts, self.actors_per_gpu, self.in_flight) < 1:
            raise ConfigError(
                "threads_per_actor, actors_per_gpu, in_flight and max_attempts must be positive"
            )


def describe(err: BaseException) -> str:
    """An error as one line, even one with no message (``MemoryError()``)."""
    text = " ".join(str(err).split())
    if not text:
        return type(err).__name__
    return text if isinstance(err, VaezipError) else f"{type(err).__name__}: {text}"


def _check_reachable(address: str) -> None:
    """A host:port address with nobody listening fails here at once, instead of after
    Ray's own connection retries (a minute or more)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", "ray://...", a bare host: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: nothing answers on "
            f"{host} port {port} ({err.strerror or err}); is the head running "
            "(ray start --head), and is this its GCS address?"
        ) from err


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def connect(address: str | None = None) -> None:
    if ray.is_initialized():
        return
    if address:
        _check_reachable(address)
    elif not os.environ.get("RAY_ADDRESS"):
        # A new local Ray, started for this job alone and gone with it, turns token
        # authentication on by default and announces it on every job: keep it on, quietly.
        logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    # No address and no RAY_ADDRESS: a new local Ray ("local"), never whatever cluster a stale
    # /tmp/ray/ray_current_cluster names (ray.init(None) would wait on it for minutes).
    target = address or (None if os.environ.get("RAY_ADDRESS") else "local")
    if target == "local":  # ours alone: gone with this driver, however it ends
        reaper.start_for(os.getpid())
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=True, configure_logging=False)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {err}") from err


@dataclass(frozen=True)
class PoolShape:
    actors: int
    num_cpus: int  # per actor: its torch threads on a CPU, its host workers beside a GPU
    num_gpus: float  # per actor: 1, or 1/N for N actors on one GPU

    def describe(self) -> str:
        if self.num_gpus:
            share = "a whole GPU" if self.num_gpus == 1 else f"1/{round(1 / self.num_gpus)} of a GPU"
            return f"{self.actors} GPU actor(s), each on {share} with {self.num_cpus} CPU(s) for host work"
        return f"{self.actors} CPU actor(s) of {self.num_cpus} CPU(s) each"


def pool_shape(
    config: PoolConfig, resources: dict[str, float], nodes: list[dict[str, float]] | None = None
) -> PoolShape:
    """The pool for a cluster of ``resources`` in all; ``nodes`` (each node's resources) keeps
    a GPU actor's CPUs within what its own node has beside its GPUs."""
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if config.require_gpus and gpus == 0:
        raise ConfigError(
            f"--device cuda: the Ray cluster has no GPUs (it has {cpus} CPUs); "
            "start the workers with GPUs (ray start --num-gpus N), or use "
            "--device auto to run on CPUs"
        )
    if config.use_gpus and gpus > 0:
        per_gpu = config.actors_per_gpu
        n = config.actors or gpus * per_gpu
        if n > gpus * per_gpu:
            raise ConfigError(
                f"{n} GPU actors asked for, the cluster has {gpus} GPUs "
                f"({per_gpu} actor(s) per GPU; raise --actors-per-gpu or ask for CPU actors with "
                "--device cpu)"
            )
        # The node's CPUs go to the GPU actors' host work (reading, image codecs), one short
        # so the driver and Ray's own processes keep a core; on a cluster, each GPU node's own.
        share = max(1, (cpus - 1) // n) if cpus > n else 0
        for node in nodes or []:
            node_gpus = int(node.get("GPU", 0))
            if node_gpus:
                here = node_gpus * per_gpu
                node_cpus = int(node.get("CPU", 0))
                share = min(share, max(1, (node_cpus - 1) // here) if node_cpus > here else 0)
        return PoolShape(n, share, 1 / per_gpu)
    per = config.threads_per_actor
    n = config.actors or max(1, cpus // per)
    if n * per > cpus:
        raise ConfigError(
            f"{n} actors x {per} threads need {n * per} CPUs, the cluster has "
            f"{cpus}; lower --actors or --threads"
        )
    return PoolShape(n, per, 0)


class Pool:
    """Actors of one worker class; ``map`` streams shard results as they finish."""

    def __init__(self, worker_cls: type, spec: Any, config: PoolConfig) -> None:
        connect(config.address)
        self.config = config
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        self.shape = pool_shape(config, ray.cluster_resources(), nodes)
        self._remote: Any = ray.remote(worker_cls).options(
            num_cpus=self.shape.num_cpus, num_gpus=self.shape.num_gpus, max_restarts=0
        )
        self.spec = spec
        self.actors: list[Any] = [self._remote.remote(spec) for _ in range(self.shape.actors)]
        self._starting: dict[Any, Any] = {}  # info() ref -> replacement actor not yet ready
        # Wait until every actor has loaded its model, so throughput excludes start-up.
        try:
            self.infos = self.call_all("info")
        except RayActorError as err:  # the actor's __init__ raised: say what, in one line
            self.close()
            cause = getattr(err, "cause", None) or err
            lines = [ln for ln in str(cause).splitlines() if "Error" in ln]
            raise ConfigError(
                f"{worker_cls.__name__} actors could not start: {lines[-1].strip() if lines else cause}"
            ) from None
        log.info(
            "pool: %d x %s (num_cpus=%d, num_gpus=%g) on %s",
            self.shape.actors,
            worker_cls.__name__,
            self.shape.num_cpus,
            self.shape.num_gpus,
            [i["device"] for i in self.infos],
        )

    def call_one(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``method(*args)`` on one actor (calibration); an actor that dies is replaced and the
        call goes to another, at most ``max_attempts`` times, like a shard."""
        for attempt in range(1, self.config.max_attempts + 1):
            actor = self.actors[0]
            try:
                return ray.get(getattr(actor, method).remote(*args), timeout=timeout_s)
            except RayTaskError as err:
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, VaezipError) else err.as_instanceof_cause()) from None
            except GetTimeoutError as err:
                raise ConfigError(f"{method} did not answer in {timeout_s} s") from err
            except RayActorError as err:
                log.warning("actor died during %s (attempt %d): %s", method, attempt, err)
                if attempt == self.config.max_attempts:
                    raise ConfigError(
                        f"{method} failed {attempt} times: the worker died each time ({err})"
                    ) from None
                self._replace(actor)
                self._wait_started(timeout_s=self.config.start_timeout_s)
        raise AssertionError("unreachable")

    def _wait_started(self, timeout_s: float) -> None:
        """Wait for the replacement actors to load their models (or fail to)."""
        for ref, actor in list(self._starting.items()):
            try:
                ray.get(ref, timeout=timeout_s)
            except (RayActorError, RayTaskError, GetTimeoutError) as err:
                log.warning("a replacement actor failed to start: %s", err)
                if actor in self.actors:
                    self.actors.remove(actor)
            del self._starting[ref]
        if not self.actors:
            raise ConfigError("no worker actor could be started to replace one that died")

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def _replace(self, dead: Any) -> None:
        """Drop a dead actor and start another; it takes work once it has loaded its model."""
        if dead in self.actors:
            self.actors.remove(dead)
        fresh = self._remote.remote(self.spec)
        self.actors.append(fresh)
        self._starting[fresh.info.remote()] = fresh

    def _backoff(self, attempt: int) -> float:
        return min(self.config.retry_backoff_s * 2 ** (attempt - 1), 60.0)

    def map(self, shards: list[Shard], *args: Any, method: str = "process") -> Iterator[ShardResult]:
        """Run ``method(shard, *args)`` for every shard on whichever actor is free.

        A shard whose actor died, or whose failure can pass, goes back in the queue after a
        backoff (``retry_backoff_s`` doubling per attempt), at most ``max_attempts`` times; a
        failure that cannot pass (corrupt input) is reported at once. A dead actor is
        replaced, but shards only go to actors that have started, so a replacement that the
        shrunken cluster cannot place never holds up the job.
        """
        # the shards in their order, then the retries: a heap of (not before, order, shard,
        # attempt), the next due in O(log N), so a million shards dispatch in O(N log N)
        # (sorting the list each round was O(N^2 log N)) and nothing is held per shard that
        # has not been retried (a heap entry for every shard was 12 MB at 100,000)
        order = itertools.count()
        fresh, left = iter(shards), len(shards)
        todo: list[tuple[float, int, Shard, int]] = []
        slots = self.config.in_flight
        # free slots, one per shard an actor may hold, interleaved so every actor gets one first
        idle = [a for _ in range(slots) for a in self.actors]
        running: dict[Any, tuple[Any, Shard, int]] = {}
        stalled_since: float | None = None

        def fail_waiting(error: str) -> Iterator[ShardResult]:
            nonlocal left
            waiting = [(s, 1) for s in fresh] + [(s, a) for _, _, s, a in sorted(todo, key=lambda t: t[:2])]
            left = 0
            todo.clear()
            for shard, attempt in waiting:
                yield ShardResult(shard.name, shard.source, ok=False, attempts=attempt, error=error)

        def next_due(now: float) -> tuple[Shard, int] | None:
            nonlocal left
            if left:
                left -= 1
                return next(fresh), 1
            if todo and todo[0][0] <= now:
                _, _, shard, attempt = heapq.heappop(todo)
                return shard, attempt
            return None

        def retry(shard: Shard, attempt: int, error: str) -> ShardResult | None:
            if attempt < self.config.max_attempts:
                heapq.heappush(
                    todo, (time.monotonic() + self._backoff(attempt), next(order), shard, attempt + 1)
                )
                return None
            return ShardResult(
                shard.name,
                shard.source,
                ok=False,
                attempts=attempt,
                retryable=True,
                error=f"failed {attempt} times; last: {error}",
            )

        while left or todo or running:
            now = time.monotonic()
            while idle and (due := next_due(now)) is not None:
                shard, attempt = due
                actor = idle.pop()
                running[getattr(actor, method).remote(shard, *args)] = (actor, shard, attempt)
            waiting = list(running) + list(self._starting)
            if not running and not idle:
                stalled_since = stalled_since or now
                if now - stalled_since > self.config.start_timeout_s:
                    yield from fail_waiting(
                        "no worker actor could start in "
                        f"{self.config.start_timeout_s:.0f} s (cluster lost "
                        "nodes or lacks resources)"
                    )
                    return
            else:
                stalled_since = None
            if todo and idle and not left:
                timeout: float | None = max(0.0, todo[0][0] - now)
            else:
                timeout = 1.0 if todo or left else None
            if not waiting:  # only shards waiting out their backoff
                time.sleep(timeout or 0.0)
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:
                continue
            (ref,) = ready
            if ref in self._starting:
                actor = self._starting.pop(ref)
                try:
                    ray.get(ref)
                    idle += [actor] * slots
                except (RayActorError, RayTaskError) as err:
                    log.warning("a replacement actor failed to start: %s", err)
                    if actor in self.actors:
                        self.actors.remove(actor)
                    if not self.actors:
                        yield from fail_waiting(f"no worker left: {err}")
                continue
            actor, shard, attempt = running.pop(ref)
            try:
                result: ShardResult = ray.get(ref)
            except RayActorError as err:
                # The process died (killed, OOM, node lost): replace it (once, though each shard
                # it held says so), retry the shard; its free slots go with it.
                if actor in self.actors:
                    log.warning("actor died on shard %s (attempt %d): %s", shard.name, attempt, err)
                    self._replace(actor)
                else:
                    log.info("shard %s was waiting at the actor that died: it goes to another", shard.name)
                idle = [a for a in idle if a != actor]
                failed = retry(shard, attempt, f"the worker died ({err})")
                if failed:
                    yield failed
                continue
            except RayTaskError as err:
                cause = getattr(err, "cause", None) or err.as_instanceof_cause()
                idle.append(actor)
                if getattr(cause, "retryable", True):
                    log.warning("shard %s failed (attempt %d): %s", shard.name, attempt, cause)
                    failed = retry(shard, attempt, describe(cause))
                    if failed:
                        yield failed
                else:
                    yield ShardResult(
                        shard.name, shard.source, ok=False, attempts=attempt, error=describe(cause)
                    )
                continue
            idle.append(actor)
            if not result.ok and result.retryable:
                failed = retry(shard, attempt, result.error or "failed")
                if failed:
                    yield failed
                continue
            # the plan's own strings, not the copies that came back: the driver keeps the name of
            # every committed file until its manifest is written
            name = shard.name if result.name == shard.name else result.name
            source = shard.source if result.source == shard.source else result.source
            yield replace(result, attempts=attempt, name=name, source=source)

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def run(worker_cls: type, spec: Any, config: PoolConfig, body: Callable[[Pool], Any]) -> Any:
    pool = Pool(worker_cls, spec, config)
    try:
        return body(pool)
    finally:
        pool.close()
