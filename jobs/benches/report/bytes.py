"""What the codes cost: the codec against its bounds, latent caches, reported against verified loss."""

from __future__ import annotations

import numpy as np

from jobs.benches.report.common import (
    latent_plot_name,
    table,
)


def codec_section(results: dict, out: str) -> list[str]:
    if "codec" not in results:
        return []
    lines: list[str] = []
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
    lines += table(
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
    lines += table(["codes", "level", "framing", "bytes", "compress MB/s", "decompress MB/s"], rows)
    return lines


def latents_section(results: dict, out: str) -> list[str]:
    if "latents" not in results:
        return []
    lines: list[str] = []
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
        lines += [f"**{name}**", "", f"![rd latents]({out}/{latent_plot_name(name)})", ""]
        lines += table(
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
    return lines


def agreement_section(results: dict, out: str) -> list[str]:
    if "agreement" not in results:
        return []
    lines: list[str] = []
    lines += [
        "## Reported loss against verified loss",
        "",
        "`jobs.encode --max-loss-db D` reports the PSNR drop it measured on calibration rows "
        "it did not fit on; `jobs.verify --checkpoint` measures it afterwards over every "
        "row (real jobs, local Ray). Target: within 0.02 dB.",
        "",
    ]
    lines += table(
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
    return lines
