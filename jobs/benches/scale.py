"""The driver at scale: N tiny shards, so what is timed is the driver's bookkeeping, not a model.

The model is a STAND-IN: an MLP of 4 inputs and 2 latents with random weights, over .npy shards
of 2 rows each. Nothing here says anything about bytes or quality; it says what the driver costs
per shard as N grows:

- ``encode`` and ``rerun``: ``jobs.encode`` run in a subprocess of its own, so the driver's CPU
  time (user + system, Ray's threads inside the driver included, Ray's other processes not) and
  peak RSS (``VmHWM``, not ``ru_maxrss``, which a child inherits from this process) are the
  driver's alone; then the same command again, with nothing left to do.
- ``start``: the same for a job of ``START_SHARDS`` shards, the fixed cost (imports, Ray,
  actors, calibration) subtracted to give the cost per shard.
- ``noop``: the runner alone dispatching N shards to 2 actors that do nothing.
- S3: the same encode and re-run against moto's S3 server on loopback, then a decode of the
  archive and its re-run, its request log counted by type (a listing is a GET of the bucket);
  then a half-done job: an encode of an input whose odd shards are broken (they fail, so no
  manifest), the broken ones mended, and the re-run's requests split by whether they name a
  shard done in the first run (asked: none) or one it finishes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from jobs.benches.moto import s3_env

START_SHARDS = 10
ROWS_PER_SHARD = 2

_DRIVER = """
import json, resource, sys, time
t0 = time.perf_counter()
import importlib
from jobs._cli import run_main
from jobs.benches.rss import peak_rss_mib
job = importlib.import_module("jobs." + sys.argv[1])
rc = run_main(job.main, sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_SELF)
out = {"rc": rc, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": peak_rss_mib()}
print("VZSCALE " + json.dumps({**out, "wall_s": time.perf_counter() - t0}))
"""


class NoOpWorker:
    """A worker that does nothing with its shard: what is left is the dispatch."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def info(self) -> dict:
        return {"device": "cpu"}

    def sees(self, uri: str) -> bool:
        return True

    def process(self, shard: Any) -> Any:
        from pipeline.ledger.completion import ShardResult

        return ShardResult(shard.name, shard.source, ok=True, rows=1)


def stand_in(folder: str) -> str:
    from pipeline.model.checkpoint import save_checkpoint
    from pipeline.model.nets import MLPConfig, build_model

    torch.manual_seed(0)
    path = os.path.join(folder, "stand-in")
    save_checkpoint(build_model(MLPConfig(input_dim=4, latent_dim=2, hidden_dims=(8,))), path)
    return path


def write_shards(folder: str, n: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(os.path.join(folder, f"s{i:07d}.npy"), rng.random((ROWS_PER_SHARD, 4), dtype=np.float32))


def drive(argv: list[str], env: dict[str, str] | None = None, job: str = "encode", rc: int = 0) -> dict:
    """``jobs.<job> argv`` in its own process: its exit code (``rc`` expected), CPU seconds,
    peak RSS, wall time."""
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, job, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    found = re.search(r"^VZSCALE (.*)$", proc.stdout, re.M)
    if not found or json.loads(found.group(1))["rc"] != rc:
        raise RuntimeError(f"{job} {argv} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(found.group(1))


def encode_args(inp: str, ckpt: str, out: str) -> list[str]:
    return ["--input", inp, "--checkpoint", ckpt, "--output", out, "--calibration-rows", "64"]


def noop_dispatch(n: int) -> float:
    """Shards per second through the runner to 2 actors that do nothing."""
    import ray

    from pipeline.ledger.shard import Shard
    from pipeline.run.runner import Pool, PoolConfig

    shards = [Shard(f"s{i}", f"s{i}", f"s{i}.vz.parquet") for i in range(n)]
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        pool = Pool(NoOpWorker, None, PoolConfig(actors=2))
        t0 = time.perf_counter()
        done = sum(1 for r in pool.map(shards) if r.ok)
        rate = done / (time.perf_counter() - t0)
        pool.close()
    finally:
        ray.shutdown()
    return rate


def bookkeeping(data: str, arch: str, scratch: str) -> dict:
    """The driver's bookkeeping alone, in this process, on a finished archive: the plan (one
    listing), the resume (which shards are done) and the manifest."""
    from pipeline.ledger.completion import shard_states
    from pipeline.ledger.manifest import write_manifest
    from pipeline.ledger.plan import plan_shards
    from pipeline.ledger.shard import Recorded

    with open(os.path.join(arch, "job.json")) as f:
        job_fp = json.load(f)["job_fingerprint"]
    t0 = time.perf_counter()
    shards = plan_shards(data)
    t1 = time.perf_counter()
    found: dict[str, Recorded] = {}
    states = shard_states(arch, shards, job_fp, found=found)
    t2 = time.perf_counter()
    os.makedirs(scratch, exist_ok=True)
    write_manifest(scratch, shards, job_fp, {"kind": "encode"}, found)
    t3 = time.perf_counter()
    if sum(s == "done" for s in states.values()) != len(shards):
        raise RuntimeError("the finished archive is not complete by its records")
    return {"plan_s": t1 - t0, "resume_s": t2 - t1, "manifest_s": t3 - t2}


def fit_exponent(ns: list[int], costs: list[float]) -> float | None:
    """The slope of log(cost) against log(N): 1 is linear."""
    pts = [(np.log(n), np.log(c)) for n, c in zip(ns, costs, strict=True) if c > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def local(sizes: list[int]) -> dict:
    out: dict = {"sizes": sizes, "rows_per_shard": ROWS_PER_SHARD, "runs": []}
    with tempfile.TemporaryDirectory(prefix="vzbench-scale-") as tmp:
        ckpt = stand_in(tmp)
        write_shards(os.path.join(tmp, "start"), START_SHARDS)
        start = drive(encode_args(os.path.join(tmp, "start"), ckpt, os.path.join(tmp, "start-arch")))
        out["start"] = start
        for n in sizes:
            data, arch = os.path.join(tmp, f"in{n}"), os.path.join(tmp, f"arch{n}")
            write_shards(data, n)
            first = drive(encode_args(data, ckpt, arch))
            again = drive(encode_args(data, ckpt, arch))
            phases = bookkeeping(data, arch, os.path.join(tmp, "manifest"))
            with open(os.path.join(arch, "manifest.json")) as f:
                manifest = json.load(f)
            table = os.path.getsize(os.path.join(arch, "_manifest", "files.parquet"))
            out["runs"].append(
                {
                    "shards": n,
                    "encode": first,
                    "rerun": again,
                    "manifest_files": manifest["files"],
                    "manifest_bytes_per_file": (table + len(json.dumps(manifest))) / n,
                    "cpu_ms_per_shard": 1000 * (first["cpu_s"] - start["cpu_s"]) / (n - START_SHARDS),
                    "rerun_cpu_ms_per_shard": 1000 * (again["cpu_s"] - start["cpu_s"]) / (n - START_SHARDS),
                    "rss_kib_per_shard": 1024 * (first["peak_rss_mib"] - start["peak_rss_mib"]) / n,
                    "rerun_rss_kib_per_shard": 1024 * (again["peak_rss_mib"] - start["peak_rss_mib"]) / n,
                    "noop_shards_s": noop_dispatch(n),
                    **phases,
                }
            )
            shutil.rmtree(data)
            shutil.rmtree(arch)
    runs = out["runs"]
    ns = [r["shards"] for r in runs]
    out["exponent_encode_cpu"] = fit_exponent(ns, [r["encode"]["cpu_s"] - start["cpu_s"] for r in runs])
    out["exponent_rerun_cpu"] = fit_exponent(ns, [r["rerun"]["cpu_s"] - start["cpu_s"] for r in runs])
    return out


ANSI = re.compile(r"\x1b\[[0-9;]*m")
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (/[^ ?]*)(\?[^ ]*)? HTTP')


def count_requests(lines: list[str]) -> Counter:
    """Requests by type from moto's log: a GET of a bucket (``/bucket`` or with a listing's
    query) is a LIST."""
    kinds: Counter = Counter()
    for line in lines:
        m = REQUEST.search(ANSI.sub("", line))  # moto colours some lines
        if not m or m.group(2).startswith("/moto-api"):
            continue
        method, path, query = m.group(1), m.group(2), m.group(3) or ""
        bucket_only = path.strip("/").count("/") == 0
        if method == "GET" and (bucket_only or "list-type" in query or "prefix=" in query):
            kinds["LIST"] += 1
        else:
            kinds[method] += 1
    return kinds


def s3(sizes: list[int]) -> dict:
    out: dict = {"sizes": sizes, "runs": []}
    with tempfile.TemporaryDirectory(prefix="vzbench-scale-s3-") as tmp:
        ckpt = stand_in(tmp)
        log_path = os.path.join(tmp, "moto.log")
        with s3_env(log_path) as (fs, env):
            for n in sizes:
                bucket = f"in{n}"
                fs.mkdir(bucket)
                fs.mkdir(f"out{n}")
                data = os.path.join(tmp, f"in{n}")
                write_shards(data, n)
                fs.put(data + "/", f"{bucket}/", recursive=True)
                shutil.rmtree(data)
                phases = {}
                arch, rec = f"s3://out{n}/arch", f"s3://out{n}/rec"
                decode_args = ["--input", arch, "--checkpoint", ckpt, "--output", rec]
                for phase in ("encode", "rerun", "decode", "decode_rerun"):
                    with open(log_path) as f:
                        before = len(f.readlines())
                    if phase.startswith("decode"):
                        run = drive(decode_args, env, job="decode")
                    else:
                        run = drive(encode_args(f"s3://{bucket}", ckpt, arch), env)
                    with open(log_path) as f:
                        kinds = count_requests(f.readlines()[before:])
                    phases[phase] = {
                        **run,
                        "requests": dict(kinds),
                        "requests_per_shard": {k: v / n for k, v in kinds.items()},
                        "total_per_shard": sum(kinds.values()) / n,
                    }
                phases["half_done_rerun"] = half_done(fs, tmp, ckpt, env, log_path, n)
                out["runs"].append({"shards": n, **phases})
    return out


SHARD_INDEX = re.compile(r"s(\d{7})")


def half_done(fs: Any, tmp: str, ckpt: str, env: dict[str, str], log_path: str, n: int) -> dict:
    """Requests of a re-run after a run whose odd shards failed, by the shards they name."""
    bucket, arch = f"half{n}", f"s3://out{n}/half"
    fs.mkdir(bucket)
    data = os.path.join(tmp, f"half{n}")
    write_shards(data, n)
    broken = {i for i in range(n) if i % 2}
    good = {i: open(os.path.join(data, f"s{i:07d}.npy"), "rb").read() for i in broken}
    for i in broken:
        with open(os.path.join(data, f"s{i:07d}.npy"), "wb") as f:
            f.write(b"not an npy")
    fs.put(data + "/", f"{bucket}/", recursive=True)
    shutil.rmtree(data)
    drive(encode_args(f"s3://{bucket}", ckpt, arch), env, rc=1)
    for i in broken:
        fs.pipe(f"{bucket}/s{i:07d}.npy", good[i])
    with open(log_path) as f:
        before = len(f.readlines())
    run = drive(encode_args(f"s3://{bucket}", ckpt, arch), env)
    with open(log_path) as f:
        lines = f.readlines()[before:]
    named = [(line, int(m.group(1))) for line in lines if (m := SHARD_INDEX.search(line))]
    done = count_requests([line for line, i in named if i not in broken])
    redone = count_requests([line for line, i in named if i in broken])
    total = sum(count_requests(lines).values())
    return {
        **run,
        "done_shards": n - len(broken),
        "requests_naming_done_shards": dict(done),
        "per_done_shard": sum(done.values()) / (n - len(broken)),
        "per_redone_shard": sum(redone.values()) / len(broken),
        "other_requests": total - sum(done.values()) - sum(redone.values()),
    }


def measure(local_sizes: list[int], s3_sizes: list[int]) -> dict:
    return {"local": local(local_sizes), "s3": s3(s3_sizes) if s3_sizes else None}
