"""The driver side shared by encode and decode: dispatch, progress bar, summary, exit code."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import posixpath
import time
import uuid
from collections.abc import Mapping

from tqdm import tqdm

from pipeline.core import storage
from pipeline.core.errors import ConfigError
from pipeline.core.hostpool import POOLS
from pipeline.data.readers import ReadOptions
from pipeline.data.readers.base import DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS, Limits
from pipeline.ledger.completion import DONE, ShardResult, fan_depth, temp_tag
from pipeline.ledger.manifest import Progress, write_failures
from pipeline.ledger.shard import Committed, Recorded, Shard
from pipeline.model.precision import PRECISIONS
from pipeline.run.runner import Pool, PoolConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Summary:
    """What a dispatch did, as running totals: the driver holds no result per shard but what
    the manifest needs of it (``recorded``), so its memory stays small at a million shards."""

    shards: int
    skipped: int
    failed: list[ShardResult] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    pool: str = ""  # the pool's shape, device, precision and host workers
    done: int = 0
    rows: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    worker_seconds: float = 0.0
    model_seconds: float = 0.0
    recorded: Committed = dataclasses.field(default_factory=Committed)  # shards done now

    def add(self, r: ShardResult) -> None:
        if not r.ok:
            self.failed.append(r)
            return
        self.done += 1
        self.rows += r.rows
        self.input_bytes += r.input_bytes
        self.output_bytes += r.output_bytes
        self.worker_seconds += r.seconds
        self.model_seconds += r.model_seconds
        if r.recorded is not None:
            self.recorded[r.name] = r.recorded

    def committed(self, found: Committed) -> Committed:
        """What the manifest lists: ``found`` (the shards done before this run, as
        ``shard_states`` read them), with the shards done now: the smaller added to the
        larger (a first run's 100,000 entries copied into an empty one were 13 MB more at the
        driver's peak)."""
        if len(found) >= len(self.recorded):
            found.update(self.recorded)  # what was done now stands over what was found before
            return found
        self.recorded.update((name, r) for name, r in found.items() if name not in self.recorded)
        return self.recorded

    def text(self, verb: str) -> str:
        ratio = self.input_bytes / self.output_bytes if self.output_bytes else float("nan")
        lines = [
            f"{verb} {self.done} shards ({self.skipped} already complete, "
            f"{len(self.failed)} failed) of {self.shards}: {self.rows} rows, "
            f"{self.input_bytes:,} input bytes -> {self.output_bytes:,} bytes "
            f"(ratio {ratio:.2f}), {self.rows / max(self.seconds, 1e-9):.1f} rows/s "
            f"in {self.seconds:.1f} s"
        ]
        if self.pool:
            lines.append(f"  pool: {self.pool}")
        if self.worker_seconds > 0:
            lines.append(
                f"  workers spent {100 * self.model_seconds / self.worker_seconds:.0f}% "
                "of their shard time in the model (the rest: reading, codec, writing)"
            )
        lines += [f"  FAILED {r.source}: {r.error}" for r in self.failed]
        return "\n".join(lines)


def check_shared(uri: str, what: str) -> None:
    """Refuse, before any worker starts, a URI only this driver's process can see: the
    workers are other processes (other machines, on a cluster)."""
    if storage.is_process_local(uri):
        raise ConfigError(
            f"{what} {uri} lives in this driver's memory: the workers run in other processes and "
            "cannot see it; use a local path (one machine), a shared folder or an object store"
        )


def check_workers_see(pool: Pool, output: str) -> None:
    """Before any shard: every actor must see a marker the driver writes into a folder on a
    disk (an object store is one for all). On a cluster whose nodes do not share the folder,
    the workers' files would land on their own disks and the archive would be empty."""
    if storage.is_object_store(storage.filesystem(output)[0]):
        return
    marker = storage.join(output, f".vz-marker-{uuid.uuid4().hex}")
    storage.write_bytes(marker, b"")
    try:
        blind = sum(1 for seen in pool.call_all("sees", marker) if not seen)
    finally:
        storage.remove(marker)
    if blind:
        raise ConfigError(
            f"--output {output} is not shared with {blind} of the {len(pool.actors)} workers (they do "
            "not see a file the driver wrote there): on a cluster of several nodes, write to a shared "
            "folder or an object store"
        )


def check_visible(output: str, done: Mapping[str, Recorded]) -> None:
    """Every shard a worker reported done must have its record where the driver looks (one
    listing): otherwise the workers wrote somewhere the driver does not share, and the archive
    would be empty with every shard "encoded" (a local path on a cluster of several nodes)."""
    if not done:
        return
    folder = storage.join(output, DONE)
    seen = sum(1 for n in storage.iter_names(folder, fan_depth(done)) if n[: -len(".json")] in done)
    if seen < len(done):  # which: only now are the names held
        listed = set(storage.iter_names(folder, fan_depth(done)))
        unseen = [name for name in done if f"{name}.json" not in listed]
        raise ConfigError(
            f"{len(unseen)} of {len(done)} shards were reported written, but the driver does not see "
            f"their records in {storage.join(output, DONE)} (first: {unseen[0]}): the workers "
            "wrote to storage the driver does not share; on a cluster of several nodes, write to a "
            "shared folder or an object store"
        )


def dispatch(
    pool: Pool, output: str, todo: list[Shard], total: int, job_fingerprint: str, *args: object
) -> Summary:
    """Run ``todo`` on the pool with a progress bar; write failures.json; remove the temporary
    files this job's dead workers left (nobody else's)."""
    if todo:
        check_workers_see(pool, output)
    start = time.perf_counter()
    summary = Summary(shards=total, skipped=total - len(todo))
    progress = Progress(output, job_fingerprint)  # a re-run after a crash reads these, not records
    try:
        with tqdm(total=len(todo), unit="shard", dynamic_ncols=True) as bar:
            for result in pool.map(todo, *args):
                summary.add(result)  # running totals: summing every result on every shard was O(N^2)
                if result.ok and result.recorded is not None:
                    progress.add(result.name, result.source, result.recorded, result.input_identity)
                elapsed = time.perf_counter() - start
                ratio = summary.input_bytes / summary.output_bytes if summary.output_bytes else None
                bar.set_postfix(
                    rows=summary.rows,
                    rows_s=f"{summary.rows / max(elapsed, 1e-9):.0f}",
                    ratio="-" if ratio is None else f"{ratio:.2f}",
                    refresh=False,
                )
                bar.update(1)
    finally:  # what was committed, even when the driver is stopped
        progress.flush()
    write_failures(
        output,
        [
            {"shard": r.name, "source": r.source, "error": r.error, "attempts": r.attempts}
            for r in summary.failed
        ],
    )
    fanned = sorted({posixpath.dirname(s.name) for s in todo} - {""})  # --fan-out's sub-folders
    folders = (DONE, *fanned, *(posixpath.join(DONE, f) for f in fanned))
    if storage.remove_stale_temps(output, (temp_tag(job_fingerprint), ""), subfolders=folders):
        log.info("removed temporary files of workers that died mid-write")
    check_visible(output, summary.recorded)
    summary.seconds = time.perf_counter() - start
    summary.pool = pool_line(pool)
    return summary


def pool_line(pool: Pool) -> str:
    """``2 GPU actor(s), each on a whole GPU with 7 CPU(s) for host work; model at bf16 on
    cuda, 7 host workers each``."""
    info = pool.infos[0] if pool.infos else {}
    where = str(info.get("device", "?")).split(":")[0]
    return (
        f"{pool.shape.describe()}; model at {info.get('precision', '?')} on {where}, "
        f"{info.get('host_workers', '?')} host worker(s) each ({info.get('host_pool', '?')})"
    )


def add_running_args(p: argparse.ArgumentParser) -> None:
    """The options of a job that runs on the worker pool (jobs.encode, jobs.decode)."""
    r = p.add_argument_group("running")
    r.add_argument(
        "--actors",
        type=int,
        help="worker actors (default: one per GPU, else one per --threads CPUs of the cluster)",
    )
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads per CPU actor")
    r.add_argument(
        "--actors-per-gpu",
        type=int,
        default=1,
        help="GPU actors sharing one GPU (each asks Ray for 1/N of it): for models too small "
        "to keep a GPU busy from one actor; the node's CPUs are split between all actors",
    )
    r.add_argument(
        "--host-workers",
        type=int,
        help="workers per actor for the host's share: image decoding (and, on decode, image "
        "encoding) beside the actor's reader, model and writer threads (default: the CPUs Ray "
        "gave the actor: on a GPU node, all of its CPUs split between its GPU actors; on CPU "
        "actors, --threads). One worker does it in the reader's own thread",
    )
    r.add_argument(
        "--host-pool",
        choices=POOLS,
        default="processes",
        help="what the host workers are: processes (default: image bytes in and pixels out "
        "through shared memory, out of the actor's GIL) or threads (no processes started; "
        "on a 2-core machine both encoded about 1.4x the rows of one worker: BENCHMARKS.md)",
    )
    r.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="what the model runs at: auto is bf16 on a GPU that supports it, else fp32 (on "
        "the demo models bf16 changed the decoded PSNR by at most 0.02 dB (CPU autocast): BENCHMARKS.md); "
        "fp16 for GPUs without bf16; the weights stay float32 (torch.autocast)",
    )
    r.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: GPU actors when the cluster has GPUs (one per GPU, or --actors-per-gpu), "
        "else CPU actors; "
        "cpu: never a GPU; cuda: GPUs or a clear error",
    )
    r.add_argument(
        "--batch-rows",
        type=int,
        default=256,
        help="rows per model batch (samples per encoder/decoder call; GPU memory grows with it)",
    )
    r.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every shard; decode: also replace another archive's decode in --output (only its "
        "files are removed; an encode archive is never removed by decode)",
    )
    r.add_argument(
        "--max-failed-shards", type=int, default=0, help="exit 0 even if up to this many shards failed"
    )
    r.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="tries per shard for failures "
        "that can pass (a worker died, a storage error); corrupt input is not retried",
    )


def pool_config(args: argparse.Namespace) -> PoolConfig:
    return PoolConfig(
        actors=args.actors,
        threads_per_actor=args.threads,
        actors_per_gpu=args.actors_per_gpu,
        use_gpus=args.device != "cpu",
        require_gpus=args.device == "cuda",
        max_attempts=args.max_attempts,
        address=args.address,
    )


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """What one input sample may claim before a worker allocates anything for it."""
    g = p.add_argument_group("limits on hostile or broken input")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="largest image, in pixels "
        "(width x height, read from its header before decoding); larger ones fail their shard",
    )
    g.add_argument(
        "--max-member-bytes",
        type=int,
        default=DEFAULT_MAX_MEMBER_BYTES,
        help="largest WebDataset tar member, in bytes (from its header)",
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(
        batch_rows=args.batch_rows,
        array_key=args.array_key,
        column=args.column,
        limits=Limits(max_pixels=args.max_pixels, max_member_bytes=args.max_member_bytes),
        host_pool=args.host_pool,
        array_samples=getattr(args, "sample_shape", "rows"),
    )
