"""results.json -> plots and BENCHMARKS.md. Every number on the page comes from the results."""

from __future__ import annotations

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOTES = "docs/BENCHMARK_NOTES.md"
SECTIONS = (  # each a key of results.json, run by `--only NAME`
    "throughput",
    "memory",
    "bombs",
    "codec",
    "latents",
    "agreement",
    "precision",
    "host",
    "gpu",
    "rd",
    "features",
    "estimate",
)
DIGIT_CODECS = ("jpeg", "webp", "jpeg_tiled", "webp_tiled", "png", "png_tiled")


BOMB_BOUND_MIB = 1536  # a worker's peak on any bomb (the reliability issue's figure)


def _most_workers(rows_s: dict) -> dict:
    return rows_s[max(rows_s, key=int)]


def _s(d: dict, fmt: str = ".2f") -> str:
    return f"{d['median']:{fmt}} ({d['low']:{fmt}}-{d['high']:{fmt}})"


def _latent_plot(name: str) -> str:
    return "rd_latents_" + "".join(ch if ch.isalnum() else "_" for ch in name.split(" ")[0].lower()) + ".png"


def write_latent_plots(results: dict, out: str) -> None:
    """Bytes per sample against the pooled loss: the --max-loss-db sweep as a curve, the
    fixed stores as points."""
    for name, rows_ in results.get("latents", {}).items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for codec in ("zstd", "rans"):
            loss = sorted(
                (r for r in rows_ if r.get("mode") == "loss" and r.get("codec", "zstd") == codec),
                key=lambda r: r["target_loss_db"],
            )
            if not loss:
                continue
            ax.plot(
                [r["bytes_per_sample"] for r in loss],
                [r["pooled_loss_db"] for r in loss],
                "o-",
                label=f"vaezip --max-loss-db 0.02..1 (--codec {codec})",
            )
            for r in loss:
                ax.annotate(
                    f"{r['target_loss_db']:g}", (r["bytes_per_sample"], r["pooled_loss_db"]), fontsize=7
                )
        for r in rows_:
            if r.get("mode") != "loss" and r["store"] != "float32 latents":
                ax.plot([r["bytes_per_sample"]], [r["pooled_loss_db"]], "s", label=r["store"])
        ax.set_xscale("log")
        ax.set_xlabel("bytes per sample (archive rows; float16 = 1.0x at the right)")
        ax.set_ylabel("measured loss, dB (pooled PSNR drop)")
        ax.set_title(f"{name}: bytes against quality loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, _latent_plot(name)), dpi=110)
        plt.close(fig)


def write_plots(results: dict, out: str) -> None:
    write_latent_plots(results, out)
    rd = results.get("rd")
    if not rd:
        return
    for key, title, name in (
        ("photos_per_sample", "held-out photo crops, one file per crop", "rd_photos.png"),
        ("digits", "digits, one file per digit", "rd_digits.png"),
    ):
        curves = rd[key]
        fig, ax = plt.subplots(figsize=(6, 4))
        for codec, pts in curves.items():
            pts = sorted(pts, key=lambda p: p["bpp"])
            ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", label=codec)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)


def _ratio(row: dict, codec: str) -> str:
    if row[codec] is None:
        return "-"
    return (">= " if row.get(f"{codec}_bound") == ">=" else "") + f"{row[codec]:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]


def targets(results: dict) -> list[list[str]]:
    """One row per target: what it asks, what was measured, met or not."""
    rows = []

    def add(what: str, measured: float, ok: bool, fmt: str = ".2f") -> None:
        rows.append([what, f"{measured:{fmt}}", "met" if ok else "**missed**"])

    for t in results.get("throughput", []):
        add(
            "encode efficiency >= 0.90",
            t["encode_efficiency"]["median"],
            t["encode_efficiency"]["median"] >= 0.90,
        )
        add(
            "decode efficiency >= 0.90",
            t["decode_efficiency"]["median"],
            t["decode_efficiency"]["median"] >= 0.90,
        )
        add(
            "encode, 2 actors / 1 >= 1.7", t["encode_scaling"]["median"], t["encode_scaling"]["median"] >= 1.7
        )
    if "memory" in results:
        add(
            "memory, 10x shard / 1x <= 1.2",
            results["memory"]["ratio"],
            results["memory"]["ratio"] <= 1.2,
            ".3f",
        )
    bombs = [b for b in results.get("bombs", []) if b["case"] != "good shard"]
    if bombs:
        worst = max(b["peak_mib"] for b in bombs)
        add(
            f"hostile input: worker peak MiB <= {BOMB_BOUND_MIB} on each bomb, each refused",
            worst,
            worst <= BOMB_BOUND_MIB and not any(b["ok"] for b in bombs),
            ".0f",
        )
    for name, c in results.get("codec", {}).items():
        r = c["vaezip_bytes"] / min(c["h_channel_bytes"], c["h_channel_left_bytes"])
        add(f"{name}: code bytes / entropy bound <= 1.10", r, r <= 1.10)
        best = min(c["xz9_column_bytes"], c["brotli11_column_bytes"])
        add(
            f"{name}: best of xz/brotli (column) / vaezip >= 0.95",
            best / c["vaezip_bytes"],
            best >= 0.95 * c["vaezip_bytes"],
        )
    for name, c in results.get("codec", {}).items():
        if "xz9_best_layout_bytes" in c:
            r = c["vaezip_bytes"] / c["xz9_best_layout_bytes"]
            add(f"{name}: codes column / xz -9 <= 1.05 (zstd {c['level']})", r, r <= 1.05)
            col = [s for s in c.get("speeds", []) if s["level"] == c["level"] and s["framing"] == "column"]
            if col:  # the same target's speeds, for the default codec
                cm = float(np.median(col[0]["compress_mb_s"]))
                dm = float(np.median(col[0]["decompress_mb_s"]))
                what = f"{name}: codes column (zstd {c['level']})"
                add(f"{what} compress MB/s >= 30 (one core)", cm, cm >= 30, ".0f")
                add(f"{what} decompress MB/s >= 150 (one core)", dm, dm >= 150, ".0f")
        if "rans_bytes" in c:
            r = (c["rans_bytes"] + c["rans_model_bytes"]) / c["xz9_best_layout_bytes"]
            add(f"{name}: codes column + model / xz -9 <= 1.05 (--codec rans)", r, r <= 1.05)
            sp = c["rans_speeds"]
            cm, dm = float(np.median(sp["compress_mb_s"])), float(np.median(sp["decompress_mb_s"]))
            add(f"{name}: --codec rans compress MB/s >= 30 (one core)", cm, cm >= 30, ".0f")
            add(f"{name}: --codec rans decompress MB/s >= 150 (one core)", dm, dm >= 150, ".0f")
    bounds = {"photos": 0.06, "digits": 0.30}
    for name, rows_ in results.get("latents", {}).items():
        bound = bounds.get(name, 0.20)  # the SD-like model's
        ok = [r for r in rows_ if r.get("mode") == "loss" and r["pooled_loss_db"] <= 0.1]
        if ok:
            best = min(ok, key=lambda r: r["vs_float16_bytes"])
            add(
                f"{name}: bytes / float16 <= {bound} at a measured loss <= 0.1 dB ({best['store']})",
                best["vs_float16_bytes"],
                best["vs_float16_bytes"] <= bound,
                ".3f",
            )
    for name, v in results.get("precision", {}).items():
        d = abs(v["difference_db"])
        add(f"{name}: bf16 vs fp32 decoded PSNR difference <= 0.05 dB (CPU autocast)", d, d <= 0.05, ".3f")
    if "host" in results:
        two = results["host"]["pools"].get("processes", {}).get("speedup", {}).get("2")
        if two:
            add(
                "host-only encode, 2 host workers (processes, the default) / 1 >= 1.6",
                two["median"],
                two["median"] >= 1.6,
            )
    agree = results.get("agreement", [])
    if agree:
        worst = max(abs(a["difference_db"]) for a in agree)
        add("job's reported loss vs verify's, |difference| <= 0.02 dB", worst, worst <= 0.02, ".3f")
    rd = results.get("rd")
    if rd:
        digits = next(r for r in rd["digits_ratios"] if r["step_sigmas"] == 1.0)
        best = max((c for c in DIGIT_CODECS if digits.get(c) is not None), key=lambda c: digits[c])
        verdict = "met" if digits[best] <= 0.2 else "**missed**"
        if verdict == "met" and digits.get(f"{best}_bound") == ">=":
            verdict = "**not shown** (the bound is below the target)"
        rows.append(
            [
                f"digits: posterior-step (1 sigma) bytes / the best classic codec at equal PSNR <= 0.2 "
                f"(best: {best.replace('_', ' ')})",
                _ratio(digits, best),
                verdict,
            ]
        )
        for key, label in (("photos_ratios", "photo crops"),):
            default = next(r for r in rd[key] if r["step_sigmas"] == 1.0)
            limit = 0.5
            for codec in ("jpeg", "webp"):
                what = f"{label}: posterior-step (1 sigma) bpp / {codec} at equal PSNR <= {limit}"
                if default[codec] is None:
                    rows.append([what, f"{codec} never reaches vaezip's PSNR", "met"])
                elif default.get(f"{codec}_bound") == ">=":
                    # only a lower bound: above the limit it is missed; below, not shown either way
                    ok = default[codec] <= limit
                    rows.append(
                        [
                            what,
                            f">= {default[codec]:.2f} ({codec}'s lowest quality already has a higher PSNR)",
                            "**not shown** (the bound is below the target)" if ok else "**missed**",
                        ]
                    )
                else:
                    add(what, default[codec], default[codec] <= limit)
        acc = rd["digits_accuracy"]
        drop = 100 * (acc["accuracy_original"] - acc["accuracy_vaezip"])
        add("digits: classifier accuracy drop <= 1 point", drop, drop <= 1.0, ".1f")
    return rows


def _provenance(results: dict) -> list[str]:
    """A table of which command, day and commit produced each section's figures."""
    runs = results.get("sections", {})
    rows = [
        [name, f"`{runs[name]['command']}`", runs[name]["date"], runs[name].get("commit") or "unknown"]
        for name in SECTIONS
        if name in runs
    ]
    earlier = results.get("earlier_commands") or results.get("command")  # results from before
    if earlier:
        rest = sorted(k for k in results if k in SECTIONS and k not in runs)
        if rest:
            rows.append([", ".join(rest), "before sections were recorded: see below", "", ""])
    if not rows:
        return []
    lines = _table(["section", "command", "date", "commit"], rows) + [""]
    if earlier:
        lines += [f"Sections not in the table came from this chain of runs: `{earlier}`.", ""]
    return lines


def write_page(results: dict, page: str, out: str) -> None:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m jobs.bench` (the sections below say which run each came from; "
        f"the last on {results['date']}): "
        f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}, torch {m['torch']}, "
        f"Ray {m['ray']}, GPU: {m['cuda'] or 'none'}. Raw figures: "
        f"`{os.path.join(out, 'results.json')}`. Speeds are the median of the repetitions "
        "with their range in brackets; ratios are taken within one repetition, side by "
        "side, because this machine is shared and noisy.",
        "",
    ]
    lines += _provenance(results)
    lines += [
        "## Targets",
        "",
    ]
    lines += _table(["target", "measured", ""], targets(results))
    if os.path.exists(NOTES):  # the hand-written reading of these figures
        with open(NOTES) as f:
            lines += [f.read().strip(), ""]
    if "throughput" in results:
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
                    _s(t["bare_encode_rows_s"], ".0f"),
                    _s(t["pipeline_encode_rows_s"], ".0f"),
                    _s(t["encode_efficiency"]),
                    _s(t["two_actor_encode_rows_s"], ".0f"),
                    _s(t["encode_scaling"]),
                ]
            )
            rows.append(
                [
                    "  decode",
                    _s(t["bare_decode_rows_s"], ".0f"),
                    _s(t["pipeline_decode_rows_s"], ".0f"),
                    _s(t["decode_efficiency"]),
                    _s(t["two_actor_decode_rows_s"], ".0f"),
                    _s(t["decode_scaling"]),
                ]
            )
        lines += _table(
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
            lines += _table(
                ["run", "model share of actor time", "model rows/s in the actor", "bare model rows/s"],
                [
                    [
                        f"{t['name']}, {kind}",
                        _s(t[f"{kind}_model_share"]),
                        _s(t[f"{kind}_model_rows_s_in_actor"], ".0f"),
                        _s(t[f"bare_{kind}_rows_s"], ".0f"),
                    ]
                    for t in inside
                    for kind in ("encode", "decode")
                ],
            )
    if "memory" in results:
        mem = results["memory"]
        lines += [
            "## Memory",
            "",
            "Peak RSS of a fresh encode actor (model loaded, calibration, one shard). "
            "Target: the 10x shard needs at most 1.2x the memory.",
            "",
        ]
        lines += _table(
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
    if "bombs" in results:
        lines += [
            "## Hostile input",
            "",
            "Peak RSS of a fresh worker process (demo photo model loaded, calibrated, then one "
            "shard holding a decompression bomb beside good rows; `jobs/benches/bombs.py`). "
            "Each bomb is refused from its header (`--max-pixels`, `--max-member-bytes`, a row "
            f"frame's declared size) before anything is allocated for it. Bound: {BOMB_BOUND_MIB} MiB.",
            "",
        ]
        lines += _table(
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
    if "codec" in results:
        level = next(iter(results["codec"].values()))["level"]
        lines += [
            "## Codec against its bounds",
            "",
            f"Default quantizer and codec (loss, 0.1 dB; zstd level {level} over Parquet pages "
            "of folded codes in the layout chosen on the calibration rows, as the archive "
            "writer stores them; before 2026-11-29: position-major, unfolded). "
            "Per-row frames (level 3, trained dictionary) are the other framing. Entropy "
            "bounds are counted on the same codes, without the cost of describing the "
            "statistics, so they are optimistic. Targets: code bytes <= 1.10x the smaller "
            "bound; no general-purpose coder more than 5% smaller.",
            "",
        ]
        rows = []
        for name, c in results["codec"].items():
            bound = min(c["h_channel_bytes"], c["h_channel_left_bytes"])
            rows.append(
                [
                    name,
                    str(c["rows"]),
                    f"{c['raw_bytes']:,}",
                    f"{c['h_channel_bytes']:,.0f}",
                    f"{c['h_channel_left_bytes']:,.0f}",
                    f"{c['vaezip_bytes']:,} ({c.get('layout', 'position')})",
                    f"{c['vaezip_bytes'] / bound:.2f}x",
                    f"{c.get('vaezip_position_unfolded_bytes', c['vaezip_bytes']):,}",
                    f"{c['vaezip_row_frames_bytes']:,} (+{c['vaezip_dictionary_bytes']:,} dict)",
                    f"{c['rans_bytes']:,} (+{c['rans_model_bytes']:,} model)" if "rans_bytes" in c else "-",
                    f"{c['zstd3_column_bytes']:,}",
                    f"{c['zstd19_column_bytes']:,}",
                    f"{c['xz9_column_bytes']:,} / {c['xz9_per_row_bytes']:,} / "
                    f"{c.get('xz9_best_layout_bytes', c['xz9_column_bytes']):,}",
                    f"{c['brotli11_column_bytes']:,} / {c['brotli11_per_row_bytes']:,}",
                ]
            )
        lines += _table(
            [
                "codes",
                "rows",
                "raw bytes",
                "H(x|channel)",
                "H(x|channel, left)",
                "vaezip (layout)",
                "vs bound",
                "before: position-major, unfolded",
                "vaezip per-row frames",
                "vaezip --codec rans",
                "zstd-3 one frame",
                "zstd-19 one frame",
                "xz -9 column / per row / best layout",
                "brotli -11 column / per row",
            ],
            rows,
        )
        rows = []
        for name, c in results["codec"].items():
            for s_ in c["speeds"]:
                rows.append(
                    [
                        name,
                        str(s_["level"]),
                        s_.get("framing", "row"),
                        f"{s_['bytes']:,}",
                        f"{sorted(s_['compress_mb_s'])[len(s_['compress_mb_s']) // 2]:.1f}",
                        f"{sorted(s_['decompress_mb_s'])[len(s_['decompress_mb_s']) // 2]:.1f}",
                    ]
                )
            if "rans_speeds" in c:
                sp = c["rans_speeds"]
                rows.append(
                    [
                        name,
                        "rans",
                        "row (column zstd 1)",
                        f"{sp['bytes']:,} (+{sp['model_bytes']:,} model)",
                        f"{float(np.median(sp['compress_mb_s'])):.1f}",
                        f"{float(np.median(sp['decompress_mb_s'])):.1f}",
                    ]
                )
        lines += [
            "zstd (and rans) speed by level and framing (MB/s of uncompressed codes, one core, the "
            "median of the repetitions, each the mean over passes that fill 0.25 s; column: the codes "
            "column written as the archive writer writes it and read as its reader reads it, page "
            "checksums verified, in batches of 256 rows):",
            "",
        ]
        lines += _table(["codes", "level", "framing", "bytes", "compress MB/s", "decompress MB/s"], rows)
    if "latents" in results:
        lines += [
            "## Against latent caches",
            "",
            "Bytes per sample and PSNR of the decoded samples, same decoder. vaezip's bytes "
            "are its archive file's (codes, keys, checksums, shapes) per row, less the "
            "footer it has once per file. Target: at most 0.15x the float16 bytes with at "
            "most 0.1 dB loss against float32 latents.",
            "",
        ]
        for name, rows_ in results["latents"].items():
            lines += [f"**{name}**", "", f"![rd latents]({out}/{_latent_plot(name)})", ""]
            lines += _table(
                [
                    "store",
                    "bytes/sample",
                    "x float16",
                    "PSNR dB",
                    "loss dB (mean PSNR)",
                    "loss dB (pooled, as the job measures)",
                    "job reported",
                    "most levels",
                ],
                [
                    [
                        r["store"],
                        f"{r['bytes_per_sample']:.1f}",
                        f"{r['vs_float16_bytes']:.3f}",
                        f"{r['psnr']:.2f}",
                        f"{r['psnr_loss_db']:.3f}",
                        f"{r['pooled_loss_db']:.3f}" if "pooled_loss_db" in r else "-",
                        f"{r['reported_loss_db']:.3f}" if r.get("reported_loss_db") is not None else "-",
                        str(r.get("max_levels", "-")),
                    ]
                    for r in rows_
                ],
            )
    if "agreement" in results:
        lines += [
            "## Reported loss against verified loss",
            "",
            "`jobs.encode --max-loss-db D` reports the PSNR drop it measured on calibration rows "
            "it did not fit on; `jobs.verify --checkpoint` measures it afterwards over every "
            "row (real jobs, local Ray). Target: within 0.02 dB.",
            "",
        ]
        lines += _table(
            ["data", "D", "job reported dB (standard error)", "verify dB", "difference dB"],
            [
                [
                    a["data"],
                    f"{a['target_loss_db']:g}",
                    f"{a['job_loss_db']:.3f} ({a.get('job_loss_se_db') or 0:.3f})",
                    f"{a['verify_loss_db']:.3f}",
                    f"{a['difference_db']:+.3f}",
                ]
                for a in results["agreement"]
            ],
        )
    if "rd" in results:
        rd = results["rd"]
        lines += [
            "## Rate-distortion against classic codecs",
            "",
            "Held-out photo crops (never seen in training), one file per crop. vaezip's "
            "bits per pixel count its archive file's bytes per row (codes, keys, checksums, "
            "shapes); the footer adds "
            f"{rd['photos_per_sample']['vaezip'][0]['footer_bytes']:,} bytes per "
            "archive file. Ratio: vaezip's bpp over the codec's bpp at the same PSNR "
            '(interpolated; ">=" where the codec\'s lowest quality already has a higher PSNR, so '
            'the ratio can only be larger; "-" where the codec never gets that low). Target: '
            "<= 0.5x JPEG and WebP.",
            "",
            f"![rd]({out}/rd_photos.png)",
            "",
        ]
        lines += _table(
            ["vaezip step (sigmas)", "bpp", "PSNR dB", "SSIM", "x JPEG", "x WebP"],
            [
                [
                    str(v["step_sigmas"]),
                    f"{v['bpp']:.3f}",
                    f"{v['psnr']:.2f}",
                    f"{v['ssim']:.3f}",
                    _ratio(r, "jpeg"),
                    _ratio(r, "webp"),
                ]
                for v, r in zip(rd["photos_per_sample"]["vaezip"], rd["photos_ratios"], strict=True)
            ],
        )
        lines += _table(["lossless", "bpp"], [[c["codec"], f"{c['bpp']:.2f}"] for c in rd["photos_lossless"]])
        lines += ["Whole images (the held-out photos, one file each):", ""]
        rows = []
        for i, name in enumerate(rd["photos_whole"]["names"]):
            for codec in ("vaezip", "jpeg", "webp"):
                for pt in rd["photos_whole"][codec][i]:
                    if codec == "vaezip" or pt["quality"] in (10, 30, 50, 70, 90):
                        rows.append(
                            [
                                name,
                                codec,
                                str(pt.get("step_sigmas", pt.get("quality"))),
                                f"{pt['bpp']:.3f}",
                                f"{pt['psnr']:.2f}",
                            ]
                        )
        lines += _table(["image", "codec", "step / quality", "bpp", "PSNR dB"], rows)
        if "lossless" in rd["photos_whole"]:
            lines += _table(
                ["image", "lossless", "bpp"],
                [
                    [name, c["codec"], f"{c['bpp']:.2f}"]
                    for name, cs in zip(
                        rd["photos_whole"]["names"], rd["photos_whole"]["lossless"], strict=True
                    )
                    for c in cs
                ],
            )
        lines += [
            "Reconstructions at each rate (8 held-out crops, and 8 digits below):",
            "",
            f"![grid]({out}/rd_grid_photos.png)",
            "",
            f"![grid]({out}/rd_grid_digits.png)",
            "",
        ]
        lines += [
            "Digits (8x8 grey), one file per digit and tiled (all 1,797 in one image, "
            "PSNR measured on each digit cut back out). Ratio: vaezip's bytes over the "
            "codec's at the same PSNR; PNG is lossless, so its bytes buy any PSNR. Target: "
            "<= 0.2x the best of them.",
            "",
            f"![rd digits]({out}/rd_digits.png)",
            "",
        ]
        lines += _table(
            [
                "vaezip step (sigmas)",
                "bytes/digit",
                "PSNR dB",
                *[f"x {c.replace('_', ' ').upper()}" for c in DIGIT_CODECS],
            ],
            [
                [
                    str(v["step_sigmas"]),
                    f"{v['bytes_per_sample']:.1f}",
                    f"{v['psnr']:.2f}",
                    *[_ratio(r, c) for c in DIGIT_CODECS],
                ]
                for v, r in zip(rd["digits"]["vaezip"], rd["digits_ratios"], strict=True)
            ],
        )
        lines += _table(
            ["lossless", "bytes/digit"],
            [[c["codec"], f"{c['bytes_per_sample']:.1f}"] for c in rd["digits_lossless"]],
        )
        acc = rd["digits_accuracy"]
        lines += [
            f"A logistic-regression classifier trained on {acc['train_rows']} original "
            f"digits scores {100 * acc['accuracy_original']:.1f}% on the other "
            f"{acc['test_rows']} originals and {100 * acc['accuracy_vaezip']:.1f}% on "
            "vaezip's reconstructions of them (target: within 1 point). The demo VAE was "
            "trained on all 1,797 digits, these included.",
            "",
        ]
    if "features" in results:
        f = results["features"]
        lines += [
            "## Latent features against raw pixels",
            "",
            "A logistic-regression probe (standardized inputs) on the digits, trained on "
            f"the first {f['train_rows']:,} and scored on the other {f['test_rows']:,}: "
            f"raw pixels ({f['pixel_dims']} values) score "
            f"**{100 * f['accuracy_pixels']:.1f}%**, the demo VAE's posterior means "
            f"({f['feature_dims']} values, what `jobs.features` exports) "
            f"**{100 * f['accuracy_features']:.1f}%**. The VAE never saw the labels; it "
            "was trained on all 1,797 digits, the test rows included.",
            "",
        ]
    lines += _gpu_lines(results)
    if "estimate" in results:
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
    with open(page, "w") as f:
        f.write("\n".join(lines))


def _gpu_lines(results: dict) -> list[str]:
    """The precision, host-only and GPU sections."""
    lines: list[str] = []
    if "precision" in results:
        lines += [
            "## bf16 against fp32: what the precision alone costs",
            "",
            "Decoded PSNR with encoder and decoder under `torch.autocast` at bf16 against "
            "float32, latents not quantized, measured on this machine's CPU (a GPU's bf16 "
            "kernels accumulate differently; the GPU section re-measures). Target: at most "
            "0.05 dB, or fp32 stays the default.",
            "",
        ]
        lines += _table(
            ["model", "fp32 PSNR dB", "bf16 PSNR dB", "difference dB"],
            [
                [k, f"{v['fp32_psnr']:.3f}", f"{v['bf16_psnr']:.3f}", f"{v['difference_db']:+.3f}"]
                for k, v in results["precision"].items()
            ],
        )
    if "host" in results:
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
        lines += _table(
            ["host pool", "host workers", "rows/s", "x one worker"],
            [
                [pool, w, _s(v, ".0f"), _s(r["speedup"][w])]
                for pool, r in h["pools"].items()
                for w, v in r["rows_s"].items()
            ],
        )
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
                    _s(_most_workers(c["host_only"]["pools"]["processes"]["rows_s"]), ".0f")
                    if "host_only" in c
                    else "-",
                ]
            )
        lines += _table(
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
