"""Fault injection for real: find Ray worker processes by the title Ray gives them and kill them."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

ARGS = ("--batch-rows", "16")  # small batches: a shard of crops takes long enough to hit


def files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern))}


def processes(title: str) -> list[int]:
    """Pids whose command line starts with ``title`` (Ray titles a busy actor
    ``ray::<Class>.<method>``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(title):
            pids.append(int(d.name))
    return pids


class Killer(threading.Thread):
    """SIGKILLs a process titled ``title`` (an actor in the middle of a shard) ``times`` times,
    at least ``gap_s`` apart, while the job runs in the main thread."""

    def __init__(self, title: str, times: int, gap_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.title, self.times, self.gap_s = title, times, gap_s
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.stop.is_set():
            pids = [p for p in processes(self.title) if p not in self.killed]
            if pids:
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    self.killed.append(pids[0])
                except ProcessLookupError:
                    continue
                time.sleep(self.gap_s)
            else:
                time.sleep(0.01)


def wait_gone(title: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while processes(title):
        assert time.monotonic() < deadline, f"processes {title!r} still alive"
        time.sleep(0.2)
