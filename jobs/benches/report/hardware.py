"""What the hardware changes: precision, the host side alone, the GPU, and the GPU estimate."""

from __future__ import annotations

import numpy as np

from jobs.benches.report.common import (
    most_workers,
    spread,
    table,
)


def precision_section(results: dict, out: str) -> list[str]:
    if "precision" not in results:
        return []
    lines: list[str] = []
    lines += [
        "## bf16 against fp32: what the precision alone costs",
        "",
        "Decoded PSNR with encoder and decoder under `torch.autocast` at bf16 against "
        "float32, latents not quantized, measured on this machine's CPU (a GPU's bf16 "
        "kernels accumulate differently; the GPU section re-measures). Target: at most "
        "0.05 dB, or fp32 stays the default.",
        "",
    ]
    lines += table(
        ["model", "fp32 PSNR dB", "bf16 PSNR dB", "difference dB"],
        [
            [k, f"{v['fp32_psnr']:.3f}", f"{v['bf16_psnr']:.3f}", f"{v['difference_db']:+.3f}"]
            for k, v in results["precision"].items()
        ],
    )
    return lines


def host_section(results: dict, out: str) -> list[str]:
    if "host" not in results:
        return []
    lines: list[str] = []
    h = results["host"]
    lines += [
        "## Host side alone: the encoder replaced by a stand-in",
        "",
        f"The encode worker on one Parquet shard of {h['rows']:,} PNG photo crops (64x64) with "
        "its model replaced by a stand-in that returns zero latents at once "
        "(`jobs/benches/host.py`), so the time is reading, PNG decoding, conversion, "
        "quantizing, zstd and the Parquet write: the host side's own ceiling, with 1 and "
        "more host workers (`--host-workers`), as processes (the default: image bytes in and "
        "pixels out through shared memory) and as threads (`--host-pool threads`). One "
        "worker decodes in the reader's own thread either way. Target: 2 host workers >= "
        "1.6x one.",
        "",
    ]
    lines += table(
        ["host pool", "host workers", "rows/s", "x one worker"],
        [
            [pool, w, spread(v, ".0f"), spread(r["speedup"][w])]
            for pool, r in h["pools"].items()
            for w, v in r["rows_s"].items()
        ],
    )
    return lines


def gpu_section(results: dict, out: str) -> list[str]:
    lines: list[str] = []
    g = results.get("gpu")
    if g:
        lines += ["## GPU", ""]
        if "skipped" in g:
            lines += [f"Not measured: {g['skipped']}.", ""]
            return lines
        lines += [
            f"One {g['device']} with {g['cpus']} CPU cores. Bare: the model alone in a tight "
            "loop (host float arrays copied per batch). Pipeline: the whole job through the Ray "
            "pool at its defaults (one GPU actor, the node's CPUs as host workers, bf16).",
            "",
        ]
        rows = []
        for c in g["cases"]:
            p = c["pipeline"]
            enc, dec = float(np.median(p["encode_rows_s"])), float(np.median(p["decode_rows_s"]))
            b16 = c["bare_bf16_rows_s"]
            rows.append(
                [
                    c["case"],
                    f"{c['bare_fp32_rows_s']['encode']:,.0f} / {c['bare_fp32_rows_s']['decode']:,.0f}",
                    f"{b16['encode']:,.0f} / {b16['decode']:,.0f}",
                    f"{c['one_reader_rows_s']:,.0f}",
                    f"{enc:,.0f} / {dec:,.0f}",
                    f"{enc / b16['encode']:.2f} / {dec / b16['decode']:.2f}",
                    f"{np.median(p['encode_model_share']):.2f} / {np.median(p['decode_model_share']):.2f}",
                    spread(most_workers(c["host_only"]["pools"]["processes"]["rows_s"]), ".0f")
                    if "host_only" in c
                    else "-",
                ]
            )
        lines += table(
            [
                "case",
                "bare fp32 enc / dec rows/s",
                "bare bf16 enc / dec",
                "one reader thread",
                "pipeline enc / dec",
                "pipeline / bare bf16",
                "model share of actor time",
                "host-only ceiling (all cores)",
            ],
            rows,
        )
    return lines


def estimate_section(results: dict, out: str) -> list[str]:
    if "estimate" not in results:
        return []
    lines: list[str] = []
    e = results["estimate"]
    host = "the pipeline's non-model work could not be separated in this run"
    for t in results.get("throughput", [])[:1]:
        extra = 1 / t["pipeline_encode_rows_s"]["median"] - 1 / t["bare_encode_rows_s"]["median"]
        if extra > 0:
            host = (
                f"the encode pipeline's non-model work (read, quantize, zstd, Parquet) "
                f"measured above costs about {1e6 * extra:.0f} us per crop, about "
                f"{1 / extra:,.0f} crops/s per host core, so feeding one GPU actor at the "
                f"estimated rate would take about {e['gpu_encode_rows_s'] * extra:,.0f} "
                "host cores"
            )
    lines += [
        "## GPU: an estimate, not a measurement",
        "",
        "No GPU was available to this run. From the photo model's FLOPs per 64x64 crop "
        f"(encode {e['encode_flops'] / 1e6:.1f} MFLOP, decode "
        f"{e['decode_flops'] / 1e6:.1f} MFLOP, counted by torch's FlopCounterMode) and "
        f"an {e['gpu']} at an assumed {100 * e['assumed_utilization']:.0f}% "
        "utilization (small convolutions run far below peak), one GPU actor would "
        f"encode about {e['gpu_encode_rows_s']:,.0f} and decode about "
        f"{e['gpu_decode_rows_s']:,.0f} crops/s. The same models reach "
        f"{e.get('cpu_encode_gflop_s', float('nan')):.1f} GFLOP/s (encode) and "
        f"{e.get('cpu_decode_gflop_s', float('nan')):.1f} GFLOP/s (decode) on one "
        "CPU core here. At such rates the host side becomes the limit, not the GPU: "
        f"{host}. This is the figure a GPU run must replace.",
        "",
    ]
    return lines
