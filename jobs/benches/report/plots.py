"""results.json -> the page's plots (rate-distortion curves, bytes against loss)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jobs.benches.report.common import latent_plot_name  # noqa: E402


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
        fig.savefig(os.path.join(out, latent_plot_name(name)), dpi=110)
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
