"""A watchdog that removes the local Ray a driver started when the driver dies without
shutting it down (SIGKILL, the OOM killer): Ray's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) otherwise outlive it, and repeated kills pile them up.

    driver ──starts──> local Ray (gcs_server, raylet -> agents, workers)
       └──starts──> reaper (own session, before Ray): every 0.2 s notes the driver's descendants;
                    once the driver is gone, SIGTERM to each (SIGKILL 5 s later)

Processes are told apart by pid and start time, so a reused pid is never signalled. Linux
only (it reads /proc); elsewhere the reaper exits at once and Ray's own clean-up is all.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

POLL_S = 0.2
READY_S = 10.0  # the most a driver waits for its reaper to start
GRACE_S = 5.0
Proc = tuple[int, int]  # pid, start time (clock ticks since boot)


def _table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()  # after the command name, which may hold spaces
        out[int(name)] = (int(fields[1]), int(fields[19]))
    return out


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> set[Proc]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][1]))
        todo += children.get(pid, [])
    return found


def _signal(procs: set[Proc], sig: int) -> set[Proc]:
    """Send ``sig`` to those of ``procs`` still running; returns them."""
    table = _table()
    alive = {(pid, start) for pid, start in procs if table.get(pid, (0, -1))[1] == start}
    for pid, _ in alive:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return alive


def watch(driver: int, ready: int | None = None) -> None:
    """Wait for ``driver`` to end, then end what it left running; ``ready``: a file
    descriptor to write a line to once watching."""
    table = _table()
    if driver not in table:
        return
    me = (os.getpid(), table[os.getpid()][1])  # a child of the driver too
    started, known = table[driver][1], _descendants(driver, table) - {me}
    if ready is not None:
        os.write(ready, b"ready\n")
        os.close(ready)
    while True:
        table = _table()
        if table.get(driver, (0, -1))[1] != started:
            break
        known |= _descendants(driver, table) - {me}
        time.sleep(POLL_S)
    if _signal(known, signal.SIGTERM):
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and _signal(known, 0):
            time.sleep(0.1)
        _signal(known, signal.SIGKILL)


def start_for(driver: int) -> None:
    """Start the reaper of ``driver`` in a session of its own (so a kill of the driver's
    process group spares it) and return once it watches: call it before starting Ray."""
    if not os.path.isdir("/proc"):
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.run.reaper", str(driver)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    assert proc.stdout is not None
    if select.select([proc.stdout], [], [], READY_S)[0]:
        proc.stdout.readline()
    proc.stdout.close()


if __name__ == "__main__":
    watch(int(sys.argv[1]), ready=sys.stdout.fileno())
