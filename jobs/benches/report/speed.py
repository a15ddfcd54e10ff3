"""The pipeline's own sections: efficiency and scaling, memory, hostile input."""

from __future__ import annotations

from jobs.benches.report.common import (
    BOMB_BOUND_MIB,
    spread,
    table,
)


def throughput_section(results: dict, out: str) -> list[str]:
    if "throughput" not in results:
        return []
    lines: list[str] = []
    lines += [
        "## Pipeline efficiency and scaling",
        "",
        "Whole pipeline (read `.npy`, encoder, quantize, zstd, Parquet write; decode: "
        "read, checksum, dequantize, decoder, `.npy` write) through the Ray actor pool, "
        "against the bare model in a tight loop, same device (CPU), batch and threads "
        "(1). Targets: efficiency >= 0.90, two actors >= 1.7x one.",
        "",
    ]
    rows = []
    for t in results["throughput"]:
        rows.append(
            [
                t["name"] + f", batch {t['batch_rows']}, {t['rows']} rows",
                spread(t["bare_encode_rows_s"], ".0f"),
                spread(t["pipeline_encode_rows_s"], ".0f"),
                spread(t["encode_efficiency"]),
                spread(t["two_actor_encode_rows_s"], ".0f"),
                spread(t["encode_scaling"]),
            ]
        )
        rows.append(
            [
                "  decode",
                spread(t["bare_decode_rows_s"], ".0f"),
                spread(t["pipeline_decode_rows_s"], ".0f"),
                spread(t["decode_efficiency"]),
                spread(t["two_actor_decode_rows_s"], ".0f"),
                spread(t["decode_scaling"]),
            ]
        )
    lines += table(
        [
            "run",
            "bare model rows/s",
            "pipeline, 1 actor rows/s",
            "efficiency",
            "pipeline, 2 actors rows/s",
            "scaling",
        ],
        rows,
    )
    inside = [t for t in results["throughput"] if "encode_model_share" in t]
    if inside:
        lines += [
            "Where the time goes inside the one actor (each worker times its model calls): "
            "the model's share of the actor's shard time, and the model's own speed "
            "there against the bare loop's.",
            "",
        ]
        lines += table(
            ["run", "model share of actor time", "model rows/s in the actor", "bare model rows/s"],
            [
                [
                    f"{t['name']}, {kind}",
                    spread(t[f"{kind}_model_share"]),
                    spread(t[f"{kind}_model_rows_s_in_actor"], ".0f"),
                    spread(t[f"bare_{kind}_rows_s"], ".0f"),
                ]
                for t in inside
                for kind in ("encode", "decode")
            ],
        )
    return lines


def memory_section(results: dict, out: str) -> list[str]:
    if "memory" not in results:
        return []
    lines: list[str] = []
    mem = results["memory"]
    lines += [
        "## Memory",
        "",
        "Peak RSS of a fresh encode actor (model loaded, calibration, one shard). "
        "Target: the 10x shard needs at most 1.2x the memory.",
        "",
    ]
    lines += table(
        ["shard", "rows", "input MiB", "peak after start MiB", "peak MiB"],
        [
            [
                k,
                str(v["rows"]),
                f"{v['input_mib']:.1f}",
                f"{v['peak_after_start_mib']:.0f}",
                f"{v['peak_mib']:.0f}",
            ]
            for k, v in (("1x", mem["small"]), ("10x", mem["large"]))
        ],
    )
    lines += [f"Ratio 10x / 1x: **{mem['ratio']:.3f}**.", ""]
    return lines


def bombs_section(results: dict, out: str) -> list[str]:
    if "bombs" not in results:
        return []
    lines: list[str] = []
    lines += [
        "## Hostile input",
        "",
        "Peak RSS of a fresh worker process (demo photo model loaded, calibrated, then one "
        "shard holding a decompression bomb beside good rows; `jobs/benches/bombs.py`). "
        "Each bomb is refused from its header (`--max-pixels` for images and array samples, "
        "`--max-member-bytes`, a row frame's declared size, a rans model's channel and size limits) "
        f"before anything is allocated for it. Bound: {BOMB_BOUND_MIB} MiB.",
        "",
    ]
    lines += table(
        ["case", "refused with", "peak after start MiB", "peak MiB"],
        [
            [
                b["case"],
                "-" if b["ok"] else (b["error"] or "").split(": ", 1)[-1][:90],
                f"{b['peak_after_start_mib']:.0f}",
                f"{b['peak_mib']:.0f}",
            ]
            for b in results["bombs"]
        ],
    )
    return lines
