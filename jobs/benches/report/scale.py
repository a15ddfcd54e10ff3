"""The driver at scale: cost per shard as the shard count grows (jobs/benches/scale.py)."""

from __future__ import annotations

from jobs.benches.report.common import table

MILLION = 1_000_000


def scale_section(results: dict, out: str) -> list[str]:
    if "scale" not in results:
        return []
    loc, s3 = results["scale"]["local"], results["scale"].get("s3")
    start = loc["start"]
    lines = [
        "## The driver at scale",
        "",
        f"A **stand-in model** (an MLP of 4 inputs and 2 latents, random weights) over N tiny `.npy` "
        f"shards of {loc['rows_per_shard']} rows, so what is measured is the driver's bookkeeping, not a "
        "model: nothing here says anything about bytes or quality. Each `jobs.encode` ran in a process of "
        "its own (driver CPU: user + system of that process, Ray's threads inside it included, Ray's "
        "other processes not; peak RSS of that process: its `VmHWM`, since the `ru_maxrss` of a child "
        "process starts at its parent's peak), then again with nothing left to do. Per "
        f"shard: beyond a job of {start.get('shards', 10)} shards (wall {start['wall_s']:.1f} s, driver CPU "
        f"{start['cpu_s']:.1f} s, peak RSS {start['peak_rss_mib']:.0f} MiB: imports, Ray, actors, "
        "calibration). Plan, resume and manifest: the driver's functions alone, on the finished "
        "archive. No-op dispatch: the runner handing the N shards to 2 actors that do nothing.",
        "",
    ]
    rows = []
    for r in loc["runs"]:
        e, a = r["encode"], r["rerun"]
        rows.append(
            [
                f"{r['shards']:,}",
                f"{e['wall_s']:.1f}",
                f"{e['cpu_s']:.1f}",
                f"{r['cpu_ms_per_shard']:.3f}",
                f"{a['wall_s']:.1f}",
                f"{r['rerun_cpu_ms_per_shard']:.3f}",
                f"{e['peak_rss_mib']:.0f}",
                f"{r['rss_kib_per_shard']:.2f}",
                f"{a['peak_rss_mib']:.0f} ({r.get('rerun_rss_kib_per_shard', float('nan')):.2f})",
                f"{r['plan_s']:.2f} / {r['resume_s']:.2f} / {r['manifest_s']:.2f}",
                f"{r['manifest_bytes_per_file']:.0f}",
                f"{r['noop_shards_s']:,.0f}",
            ]
        )
    lines += table(
        [
            "shards",
            "encode wall s",
            "driver CPU s",
            "CPU ms/shard",
            "re-run wall s",
            "re-run CPU ms/shard",
            "peak RSS MiB",
            "RSS KiB/shard",
            "re-run peak RSS MiB (KiB/shard)",
            "plan / resume / manifest s",
            "manifest B/file",
            "no-op dispatch shards/s",
        ],
        rows,
    )
    big = loc["runs"][-1]
    lines += [
        f"Growth of the driver's CPU beyond the fixed start, fitted over N: exponent "
        f"{_fmt(loc.get('exponent_encode_cpu'))} for the encode, {_fmt(loc.get('exponent_rerun_cpu'))} for "
        f"the re-run (1 is linear). At the largest N's cost per shard, 1 M shards would take about "
        f"{big['cpu_ms_per_shard'] * MILLION / 1000 / 60:.0f} minutes of driver CPU for the encode and "
        f"{big['rerun_cpu_ms_per_shard'] * MILLION / 1000 / 60:.0f} for a re-run with nothing to do, and "
        f"{big['rss_kib_per_shard'] * MILLION / 1024:.0f} MiB of driver memory beyond its start "
        "(extrapolated, not measured).",
        "",
    ]
    if s3:
        lines += [
            "The same jobs against moto's S3 server on loopback; requests counted from its log by type "
            "(LIST: a GET of the bucket), per shard:",
            "",
        ]
        rows = []
        for r in s3["runs"]:
            for phase in ("encode", "rerun", "decode", "decode_rerun"):
                if phase not in r:  # runs before decode was measured
                    continue
                p = r[phase]
                per = p["requests_per_shard"]
                kinds = ", ".join(f"{k} {per[k]:.2f}" for k in sorted(per))
                rows.append(
                    [
                        f"{r['shards']:,}",
                        phase,
                        f"{p['wall_s']:.1f}",
                        f"{p['total_per_shard']:.3f}",
                        kinds or "-",
                        f"{p['peak_rss_mib']:.0f}",
                    ]
                )
        lines += table(["shards", "job", "wall s", "requests/shard", "by type", "driver peak RSS MiB"], rows)
        halves = [(r["shards"], r["half_done_rerun"]) for r in s3["runs"] if "half_done_rerun" in r]
        if halves:
            lines += [
                "",
                "A half-done job: the odd shards of the input broken at first (they fail, so the first "
                "run writes no manifest), then mended, and the re-run's requests split by the shard "
                "they name:",
                "",
            ]
            lines += table(
                ["shards", "wall s", "per done shard", "per shard it finishes", "naming no shard"],
                [
                    [
                        f"{n:,}",
                        f"{h['wall_s']:.1f}",
                        f"{h['per_done_shard']:.3f}",
                        f"{h['per_redone_shard']:.2f}",
                        f"{h['other_requests']}",
                    ]
                    for n, h in halves
                ],
            )
    return lines


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def scale_targets(results: dict) -> list[tuple[str, float, bool, str]]:
    """(target, measured, met, format) rows for the targets table."""
    if "scale" not in results:
        return []
    loc, s3 = results["scale"]["local"], results["scale"].get("s3")
    big = loc["runs"][-1]
    n = f"{big['shards']:,} shards"
    rows: list[tuple[str, float, bool, str]] = []

    def at_most(what: str, x: float, bound: float, fmt: str = ".2f") -> None:
        rows.append((f"{what} <= {bound:g}", x, x <= bound, fmt))

    at_most(f"driver CPU ms per shard ({n})", big["cpu_ms_per_shard"], 1.0, ".3f")
    at_most("driver CPU growth exponent", loc["exponent_encode_cpu"], 1.1)
    rate = big["noop_shards_s"]
    rows.append((f"no-op dispatch, 2 actors, shards/s >= 1000 ({n})", rate, rate >= 1000, ".0f"))
    beyond = big["rerun"]["wall_s"] - loc["start"]["wall_s"]
    at_most(f"re-run with nothing to do, s beyond the start ({n})", beyond, 30, ".1f")
    at_most(f"driver peak RSS KiB per shard ({n})", big["rss_kib_per_shard"], 1.0)
    if "rerun_rss_kib_per_shard" in big:
        at_most(f"driver peak RSS KiB per shard, re-run ({n})", big["rerun_rss_kib_per_shard"], 1.0)
    at_most("manifest bytes per file", big["manifest_bytes_per_file"], 100, ".0f")
    if s3:
        r = s3["runs"][-1]
        at_most(f"S3 requests per shard, encode ({r['shards']:,})", r["encode"]["total_per_shard"], 4)
        at_most(
            f"S3 requests per shard, re-run ({r['shards']:,})", r["rerun"]["total_per_shard"], 0.01, ".3f"
        )
        if "decode" in r:
            at_most(f"S3 requests per shard, decode ({r['shards']:,})", r["decode"]["total_per_shard"], 5)
        if "half_done_rerun" in r:
            at_most(
                f"S3 requests per done shard, re-run of a half-done encode ({r['shards']:,})",
                r["half_done_rerun"]["per_done_shard"],
                0,
                ".3f",
            )
    return rows
