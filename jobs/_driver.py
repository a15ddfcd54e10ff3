"""The driver side shared by encode and decode: dispatch, progress bar, summary, exit code."""

from __future__ import annotations

import dataclasses
import time

from tqdm import tqdm

from pipeline.manifest import write_failures
from pipeline.plan import Shard
from pipeline.runner import Pool
from pipeline.worker_common import ShardResult


@dataclasses.dataclass(frozen=True)
class Summary:
    shards: int
    skipped: int
    done: list[ShardResult]
    failed: list[ShardResult]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.done)

    @property
    def input_bytes(self) -> int:
        return sum(r.input_bytes for r in self.done)

    @property
    def output_bytes(self) -> int:
        return sum(r.output_bytes for r in self.done)

    def text(self, verb: str) -> str:
        ratio = self.input_bytes / self.output_bytes if self.output_bytes else float("nan")
        lines = [f"{verb} {len(self.done)} shards ({self.skipped} already complete, "
                 f"{len(self.failed)} failed) of {self.shards}: {self.rows} rows, "
                 f"{self.input_bytes:,} input bytes -> {self.output_bytes:,} bytes "
                 f"(ratio {ratio:.2f}), {self.rows / max(self.seconds, 1e-9):.1f} rows/s "
                 f"in {self.seconds:.1f} s"]
        lines += [f"  FAILED {r.source}: {r.error}" for r in self.failed]
        return "\n".join(lines)


def dispatch(pool: Pool, output: str, todo: list[Shard], total: int, *args: object) -> Summary:
    start = time.perf_counter()
    done: list[ShardResult] = []
    failed: list[ShardResult] = []
    with tqdm(total=len(todo), unit="shard", dynamic_ncols=True) as bar:
        for result in pool.map(todo, *args):
            (done if result.ok else failed).append(result)
            rows = sum(r.rows for r in done)
            elapsed = time.perf_counter() - start
            inb, outb = sum(r.input_bytes for r in done), sum(r.output_bytes for r in done)
            bar.set_postfix(rows=rows, rows_s=f"{rows / max(elapsed, 1e-9):.0f}",
                            ratio=f"{inb / outb:.2f}" if outb else "-", refresh=False)
            bar.update(1)
    write_failures(output, [{"shard": r.name, "source": r.source, "error": r.error,
                             "attempts": r.attempts} for r in failed])
    return Summary(shards=total, skipped=total - len(todo), done=done, failed=failed,
                   seconds=time.perf_counter() - start)
