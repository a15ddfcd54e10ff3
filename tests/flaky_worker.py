"""A worker whose storage fails the first times it is touched: for the retry tests.

Attempts are counted in files (a retry may land on another actor, another process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.ledger.completion import ShardResult
from pipeline.ledger.shard import Shard


class FlakyWorker:
    def __init__(self, spec: dict) -> None:
        self.log = Path(spec["log"])
        self.fail_times = spec["fail_times"]

    def info(self) -> dict:
        return {"device": "cpu"}

    def calibrate(self, times_to_die: int) -> int:
        """Dies (the process, as an OOM kill would) the first ``times_to_die`` calls."""
        mark = self.log / "calibrate"
        with mark.open("a") as f:
            f.write("x\n")
        attempt = len(mark.read_text().splitlines())
        if attempt <= times_to_die:
            os._exit(1)
        return attempt

    def process(self, shard: Shard) -> ShardResult:
        mark = self.log / shard.name
        with mark.open("a") as f:
            f.write(f"{time.monotonic()}\n")
        attempt = len(mark.read_text().splitlines())
        if shard.name.startswith("corrupt"):
            raise InputError(shard.source, "corrupt input", row=3)
        if shard.name.startswith("oom"):
            raise MemoryError()
        if shard.name.startswith("die") and attempt == 1:
            os._exit(1)  # the process, as an OOM kill would
        if attempt <= self.fail_times.get(shard.name, 0):
            raise ConnectionError(f"{shard.source}: connection reset by peer")
        return ShardResult(shard.name, shard.source, ok=True, rows=1)
