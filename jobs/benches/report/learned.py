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
        "second, as the rans codec's figures count them; the decode includes the hyper-synthesis that "
        "picks each value's table.",
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
        ],
        rows,
    )
    lines += ["The ELBO VAE (the demo photo model, its archive bytes per row) at the same bytes:", ""]
    lines += table(
        ["ELBO step (sigmas)", "bpp", "PSNR dB", "rd hyperprior PSNR at these bytes, gain dB"],
        [
            [
                f"{g['step_sigmas']:g}",
                f"{g['bpp']:.3f}",
                f"{e['psnr']:.2f}",
                "-" if g["gain_db"] is None else f"{g['gain_db']:+.2f}",
            ]
            for g, e in zip(r["gains_over_elbo"], r["elbo"], strict=True)
        ],
    )
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
    gains = [g["gain_db"] for g in r["gains_over_elbo"] if g["gain_db"] is not None]
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
