"""A driver that started its own local Ray leaves no Ray process behind when it is SIGKILLed
(the hostile run found ray::DashboardAgent and ray::RuntimeEnvAgent alive 40 s later)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.run.reaper import _descendants, _table

ROOT = Path(__file__).resolve().parents[1]


def _alive(procs) -> set:
    table = _table()
    return {(pid, start) for pid, start in procs if table.get(pid, (0, -1))[1] == start}


@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the reaper reads /proc (Linux)")
def test_a_killed_driver_leaves_no_ray_process(tmp_path, digits_dir, digits_ckpt):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "jobs.encode", "--input", digits_dir, "--checkpoint", digits_ckpt]
    driver = subprocess.Popen(
        [*cmd, "--output", str(tmp_path / "arch")], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert driver.stderr is not None
        for line in driver.stderr:  # the pool is up: Ray and its agents are running
            if "pool:" in line:
                break
        ray_procs = _descendants(driver.pid, _table())
        assert len(ray_procs) >= 3  # gcs_server, raylet, agents, workers
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while _alive(ray_procs) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(ray_procs), [open(f"/proc/{p}/cmdline").read() for p, _ in _alive(ray_procs)]
    finally:
        if driver.poll() is None:
            driver.kill()
