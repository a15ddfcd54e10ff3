"""The latent cache a diffusion trainer would keep (jobs/benches/cache.py)."""

from __future__ import annotations

import math

from jobs.benches.report.common import table


def cache_section(results: dict, out: str) -> list[str]:
    if "cache" not in results:
        return []
    c = results["cache"]
    shape = "x".join(map(str, c["latent_shape"]))
    lines = [
        "## A latent cache for diffusion training",
        "",
        f"An AutoencoderKL of the SD-1.x layout (blocks {c['blocks']}, factor 8, 4 latent channels), trained "
        f"{c['train_s']:.0f} s on the demo photo crops and imported with `jobs.import_diffusers`; "
        f"{c['rows']:,} 64x64 crops (training and held-out), each a {shape} latent. Latent error: the "
        "worst channel's RMS error over that channel's standard deviation, measured here over every row "
        "against the model's own latents (vaezip's job figure, on calibration rows it was not fitted on, "
        "beside it).",
        "",
    ]
    lines += _stores_table(c["stores"], c["latent_shape"]) + _entropies(c)
    if "tiles" in c:
        t = c["tiles"]
        lines += [
            f"The same at the size the trainers' caches keep: the demo's photos cut into {t['rows']} tiles "
            f"of 256x256 side by side (training and held-out photos), each a "
            f"{'x'.join(map(str, t['latent_shape']))} latent; every tile is a calibration row here "
            "(the rans model is fitted on them all):",
            "",
        ]
        lines += _stores_table(t["stores"], t["latent_shape"]) + _entropies(t)
    reads = c["read_latents_s"]
    base = reads["fp16 .npy per sample"]["median"]
    lines += [
        "Reading, latents a second into a DataLoader (batch 32, one process, the median of the passes; the "
        "files in the page cache):",
        "",
    ]
    lines += table(
        ["reader", "latents/s", "x per-sample .npy"],
        [
            [k, f"{v['median']:,.0f} ({v['low']:,.0f}-{v['high']:,.0f})", f"{v['median'] / base:.2f}"]
            for k, v in reads.items()
        ],
    )
    if "remote" in c:
        r = c["remote"]
        lines += [
            "A remote archive (the rans archive at 1% above, served by moto's S3 server on loopback) read "
            "with `ArchiveDataset(..., cache_dir=...)`, batch 32 fp16: "
            f"{r['first_epoch']['median']:,.0f} latents a second in its first epoch (the files fetched and "
            f"kept), {r['later_epochs']['median']:,.0f} ({r['later_epochs']['low']:,.0f}-"
            f"{r['later_epochs']['high']:,.0f}) in later ones (read from the cache, each file's sha256 "
            f"checked again) against {r['local']['median']:,.0f} from local disk in passes taken in turn: "
            f"{r['ratio']:.2f}x the local epoch's time.",
            "",
        ]
    cal = c["calibration"]
    lines += [
        f"Calibration with `--max-latent-error 0.01` on {cal['rows']:,} rows took "
        f"{cal['seconds']:.2f} s in an encode worker, against {cal['encoder_seconds']:.2f} s of the "
        "encode's own model time for as many rows (the same worker then encoding every shard: its model "
        f"time per row, as the job's summary counts it; {cal['ratio']:.2f}x)"
        + (
            f"; the encoder alone outside the worker (batches of 64): {cal['encoder_alone_seconds']:.2f} s."
            if "encoder_alone_seconds" in cal
            else "."
        ),
        "",
    ]
    return lines


def _stores_table(stores: list[dict], latent_shape: list[int]) -> list[str]:
    rows = []
    values = math.prod(latent_shape)
    for s in stores:
        job = f" (job: {100 * s['job_error']:.3g}%)" if "job_error" in s else ""
        split = (
            f"{s['codes_bytes']:,.1f} ({8 * s['codes_bytes'] / values:.2f}) / {s['footer_bytes']:,.1f}"
            if "codes_bytes" in s
            else "-"
        )
        rows.append(
            [s["store"], f"{s['bytes']:,.1f}", f"{s['x_fp16']:.3f}", f"{100 * s['error']:.3g}%{job}", split]
        )
    heads = ["store", "bytes/sample", "x fp16 raw", "latent error", "codes (bits/value) / footers, B/sample"]
    return table(heads, rows)


def _entropies(c: dict) -> list[str]:
    if "entropy" not in c:
        return []
    return [
        "Order-0 entropy of the codes at each bound, bits a value (what a coder with one table a "
        "channel would need; against the codes' own bits a value in the table above): "
        + "; ".join(
            f"{100 * float(b):g}%: {e['alone']:.2f} alone, {e['neighbours']:.2f} after the neighbours' "
            f"prediction (rans's), {e['neighbours_and_channels']:.2f} after the earlier channels' too"
            for b, e in c["entropy"].items()
        )
        + ". 0.25x fp16 is 4 bits a value in all.",
        "",
    ]


def calibration_section(results: dict, out: str) -> list[str]:
    if "calibration" not in results:
        return []
    c = results["calibration"]
    lines = [
        "## What pixel rate control costs",
        "",
        f"`--max-loss-db {c['max_loss_db']:g}`'s calibration in an encode worker ({c['rows']:,} rows, one "
        "thread, the fastest of two), against the same worker calibrating `--quantizer posterior`, which "
        "encodes the same rows and decodes nothing: the rate control's cost as a multiple of the encode "
        "of its calibration rows (`jobs/benches/calibration.py`). The decoder runs once on the fit rows "
        "for their outputs, once for every channel's gain (each row with one channel quantized), a "
        "few times for the search of the steps' scale, and twice on the check rows.",
        "",
    ]
    lines += table(
        ["model", "encode s", "--max-loss-db s", "ratio", "loss dB (check rows)", "bits/value"],
        [
            [
                r["model"],
                f"{r['encode_s']:.2f}",
                f"{r['loss_s']:.2f}",
                f"{r['ratio']:.2f}x",
                f"{r['measured_loss_db']:.3f}",
                f"{r['bits_per_value']:.3f}",
            ]
            for r in c["runs"]
        ],
    )
    return lines


def calibration_targets(results: dict) -> list[tuple[str, float, bool, str]]:
    if "calibration" not in results:
        return []
    return [
        (
            f"--max-loss-db calibration <= 3x the encode of its rows ({r['model']})",
            r["ratio"],
            r["ratio"] <= 3,
            ".2f",
        )
        for r in results["calibration"]["runs"]
    ]


def _bound_of(store: str) -> float | None:
    """Runs before the codec was recorded named their bound only in the store's label."""
    parts = store.split()
    return float(parts[2]) if len(parts) > 2 and parts[1] == "--max-latent-error" else None


def cache_targets(results: dict) -> list[tuple[str, float, bool, str]]:
    if "cache" not in results:
        return []
    c = results["cache"]
    out = []
    sizes = [("256x256 tiles", c["tiles"]["stores"])] if "tiles" in c else []
    for bound, most in ((0.01, 0.25), (0.002, 0.5)):
        for size, stores in [*sizes, ("64x64 crops", c["stores"])]:
            mine = [s for s in stores if s.get("bound", _bound_of(s["store"])) == bound]
            if mine:
                s = min(mine, key=lambda s: s["x_fp16"])
                ok = s["x_fp16"] <= most and s["error"] <= 1.05 * bound
                what = (
                    f"latent cache at <= {100 * bound:g}% error, {size}: bytes <= {most}x fp16 ({s['store']})"
                )
                out.append((what, s["x_fp16"], ok, ".3f"))
    reads = c["read_latents_s"]
    mine = reads["ArchiveDataset (--max-latent-error 0.01)"]["median"]
    r1 = mine / reads["fp16 .npy per sample"]["median"]
    r2 = mine / reads["fp16 safetensors per sample"]["median"]
    out.append(("latent cache reading >= 1.5x per-sample fp16 .npy", r1, r1 >= 1.5, ".2f"))
    out.append(("latent cache reading >= 1.0x per-sample safetensors", r2, r2 >= 1.0, ".2f"))
    if "remote" in c:
        r = c["remote"]["ratio"]
        what = "latent cache: a remote archive's later epochs (local cache_dir) <= 1.2x a local one's time"
        out.append((what, r, r <= 1.2, ".2f"))
    ratio = c["calibration"]["ratio"]
    what = "--max-latent-error calibration <= 1.2x the encode's model time for its rows"
    out.append((what, ratio, ratio <= 1.2, ".2f"))
    return out
