"""A learned codec trained for bytes against the ELBO VAE and the classic codecs
(jobs/benches/learned.py)."""

from __future__ import annotations

from jobs.benches.report.common import table


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def learned_section(results: dict, out: str) -> list[str]:
    if "learned" not in results:
        return []
    r = results["learned"]
    lines = [
        "## A learned codec trained for bytes",
        "",
        f"rd models (`jobs.train --objective rd`: GDN transforms at 1/16, 96 latent channels, width 64) "
        f"trained from scratch for {r['steps']} steps of {r['batch']} crops (the demo photo VAE's own "
        f"budget) on {r['train_rows']:,} training crops, {r['threads']} torch threads; then the "
        f"{r['heldout_rows']} held-out 64x64 crops through their own coder (rANS under the integer "
        "tables of the learned priors). Bytes per crop: the main and side streams a row stores. "
        "x ELBO, x WebP, x JPEG: "
        "these bytes over that codec's at the same PSNR (interpolated; - where its curve does not reach "
        "it). Coder speeds: entropy coding alone on one thread, in millions of codes (latent values) a "
        "second, as the rans codec's figures count them, on 20 copies of the rows; the hyper-synthesis "
        "that picks each latent's table (float64, CPU) is timed apart.",
        "",
    ]
    rows = [
        [
            p["prior"],
            f"{p['lmbda']:g}",
            f"{p['bytes_per_sample']:.1f}",
            f"{p['side_bytes_per_sample']:.1f}",
            f"{p['bpp']:.3f}",
            f"{p['psnr']:.2f}",
            _x(p["x_elbo"]),
            _x(p["x_webp"]),
            _x(p["x_jpeg"]),
            f"{p['train_cpu_s']:.0f}",
            f"{p['encode_codes_mb_s']:.1f} / {p['decode_codes_mb_s']:.1f}",
            "-" if not p.get("hyper_synthesis_rows_s") else f"{p['hyper_synthesis_rows_s']:,.0f}",
        ]
        for p in r["points"]
    ]
    lines += table(
        [
            "prior",
            "lambda",
            "bytes/crop",
            "side",
            "bpp",
            "PSNR dB",
            "x ELBO",
            "x WebP",
            "x JPEG",
            "train CPU s",
            "coder enc / dec M codes/s",
            "hyper-synthesis rows/s",
        ],
        rows,
    )
    lines += [
        "Gain: the point's PSNR less the ELBO VAE's (the demo photo model, its archive bytes per row, "
        'the "rd" section\'s curve) at the same bytes: '
        + ", ".join(
            f"{p['prior']} {p['lmbda']:g}: "
            + ("-" if p.get("gain_over_elbo_db") is None else f"{p['gain_over_elbo_db']:+.2f} dB")
            for p in r["points"]
        )
        + ". The ELBO VAE: "
        + ", ".join(
            f"{e['bpp']:.3f} bpp {e['psnr']:.2f} dB" for e in sorted(r["elbo"], key=lambda e: e["bpp"])
        )
        + ".",
        "",
    ]
    webp = sorted(r["webp"], key=lambda c: c["bpp"])[:3]
    lines += [
        "WebP per crop at its lowest qualities: "
        + ", ".join(f"q{c['quality']} {c['bytes_per_sample']:.0f} B {c['psnr']:.2f} dB" for c in webp)
        + ".",
        "",
    ]
    return lines


def learned_targets(results: dict) -> list[tuple[str, float, bool, str]]:
    if "learned" not in results:
        return []
    r = results["learned"]
    out = []
    gains = [p["gain_over_elbo_db"] for p in r["points"] if p.get("gain_over_elbo_db") is not None]
    if gains:
        best = max(gains)
        out.append(
            ("rd codec >= 1.5 dB above the ELBO VAE at equal bytes (best point)", best, best >= 1.5, "+.2f")
        )
    hyper = [p for p in r["points"] if p["prior"] == "hyperprior"]
    enc = min(p["encode_codes_mb_s"] for p in hyper)
    dec = min(p["decode_codes_mb_s"] for p in hyper)
    out.append(("learned coder encode >= 30 MB/s of codes, one core", enc, enc >= 30, ".1f"))
    out.append(("learned coder decode >= 150 MB/s of codes, one core", dec, dec >= 150, ".1f"))
    return out
