"""A learned codec trained for bytes against the ELBO VAE and the classic codecs
(jobs/benches/learned.py)."""

from __future__ import annotations

from jobs.benches import rd as rd_bench
from jobs.benches.report.common import table


def _db_per_point(points: list[dict], key: str) -> str:
    """``prior lambda: +x.xx dB`` for each point's ``key`` ("-" where it is None)."""
    return ", ".join(
        f"{p['prior']} {p['lmbda']:g}: " + ("-" if p.get(key) is None else f"{p[key]:+.2f} dB")
        for p in points
    )


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def learned_section(results: dict, out: str) -> list[str]:
    if "learned" not in results:
        return []
    r = results["learned"]
    seeds = r.get("seeds", 1)
    lines = [
        "## A learned codec trained for bytes",
        "",
        "rd models (`jobs.train --objective rd`: GDN transforms at 1/16, 96 latent channels, width 64) "
        + (
            f"trained from scratch from each of {seeds} seeds (each hyperprior point below is their mean; "
            "each seed's are in the table after CompressAI's) "
            if seeds > 1
            else "trained from scratch "
        )
        + f"for {r['steps']} steps of {r['batch']} crops (the demo photo VAE's own "
        f"budget) on {r['train_rows']:,} training crops, {r['threads']} torch threads; then the "
        f"{r['heldout_rows']} held-out 64x64 crops through their own coder (rANS under the integer "
        "tables of the learned priors). Bytes per crop: the one stream a row stores (a hyperprior's side "
        "information, then the latent); side: the side information's share, its code length under its "
        "prior (one state runs through the stream, so it has no bytes of its own). "
        "x ELBO, x CompressAI (its model of the same prior), x WebP, x JPEG: "
        "these bytes over that codec's at the same PSNR (interpolated; &ge;: a lower bound, where that "
        "codec's lowest setting is already sharper; - where its curve does not reach it). "
        "Coder speeds: entropy coding alone on one thread, in millions of codes (latent values) a "
        "second, as the rans codec's figures count them, on 20 copies of the rows; the hyper-synthesis "
        "that picks each latent's table (float64, CPU) is timed apart.",
        "",
    ]
    rows = [
        [
            p["prior"],
            f"{p['lmbda']:g}",
            f"{p['bytes_per_sample']:.1f}",
            f"{p['side_ideal_bytes_per_sample']:.1f}",
            f"{p['bpp']:.3f}",
            f"{p['psnr']:.2f}",
            _xb(p, "elbo"),
            *([_xb(p, "compressai")] if r.get("compressai") else []),
            _xb(p, "webp"),
            _xb(p, "jpeg"),
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
            "side (ideal)",
            "bpp",
            "PSNR dB",
            "x ELBO",
            *(["x CompressAI"] if r.get("compressai") else []),
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
        + _db_per_point(r["points"], "gain_over_elbo_db")
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
    return lines + _peer_lines(r) + _seed_lines(r) + _longer_lines(r) + _digits_lines(r.get("digits"))


def _seed_lines(r: dict) -> list[str]:
    """Each seed's hyperprior point, vaezip's and CompressAI's, where the points are means."""
    if r.get("seeds", 1) < 2:
        return []
    peer = (r.get("compressai") or {}).get("seed_points", [])
    rows = [
        [name, f"{p['lmbda']:g}", str(p["seed"]), f"{p['bytes_per_sample']:.1f}", f"{p['psnr']:.2f}"]
        for name, points in (("vaezip", r["seed_points"]), ("CompressAI", peer))
        for p in points
        if p["prior"] == "hyperprior"
    ]
    return [
        f"Each seed's hyperprior model ({r['seeds']} seeds a lambda; the points above are their means):",
        "",
        *table(["system", "lambda", "seed", "bytes/crop", "PSNR dB"], rows),
    ]


def _seeds_said(r: dict) -> str:
    n = r.get("seeds", 1)
    return "seed 0" if n == 1 else f"the same {n} seeds (a hyperprior point: their mean)"


def _peer_lines(r: dict) -> list[str]:
    peer = r.get("compressai")
    if not peer:
        return [
            "CompressAI's models were not trained in this run (`jobs.bench --compressai-python` names "
            "an interpreter that has CompressAI; it pins numpy below 2, so it lives apart).",
            "",
        ]
    lines = [
        f"CompressAI {peer['compressai']} (torch {peer['torch']}, its own interpreter) in the same run: "
        "`ScaleHyperprior` (bmshj2018_hyperprior) and `FactorizedPrior` (bmshj2018_factorized) at "
        f"N=64, M=96, each trained from {_seeds_said(r)} for the same steps of the same crops at the same "
        "learning rate, then `compress()` on the same held-out crops. x vaezip: these bytes over the "
        "vaezip rd models' (same prior) at the same PSNR (&ge; as above). vaezip's PSNR less "
        "CompressAI's at vaezip's bytes (interpolated on CompressAI's curve of the same prior; - "
        "outside it): " + _db_per_point(r["points"], "db_over_compressai") + ".",
        "",
    ]
    rows = []
    for c in peer["points"]:
        ours = [p for p in r["points"] if p["prior"] == c["prior"]]
        x, bound = rd_bench.ratio_against(ours, c) if ours else (None, "=")
        rows.append(
            [
                c["prior"],
                f"{c['lmbda']:g}",
                f"{c['bytes_per_sample']:.1f}",
                f"{c['side_bytes_per_sample']:.1f}",
                f"{c['psnr']:.2f}",
                _xb({"x_vaezip": x, "x_vaezip_bound": bound}, "vaezip"),
                f"{c['train_cpu_s']:.0f}",
            ]
        )
    lines += table(
        ["prior", "lambda", "bytes/crop", "side string", "PSNR dB", "x vaezip", "train CPU s"], rows
    )
    return lines


def compressai_worst(results: dict) -> tuple[float, bool] | None:
    """The largest of vaezip's hyperprior points' bytes over CompressAI's hyperprior curve's at
    the same PSNR, and whether some ratio taken is only a lower bound (``rd.bpp_against``: the
    curve is shown at or below CompressAI's only where the largest is <= 1 and none is a bound)."""
    r = results.get("learned", {})
    xs = [
        (p["x_compressai"], p.get("x_compressai_bound") == ">=")
        for p in r.get("points", [])
        if p["prior"] == "hyperprior" and p.get("x_compressai") is not None
    ]
    if not xs or not r.get("compressai"):
        return None
    return max(x for x, _ in xs), any(bound for _, bound in xs)


def webp_gap(r: dict, p: dict) -> float | None:
    """The point's PSNR less WebP's (per crop) at the point's bytes; None outside WebP's curve."""
    at = rd_bench.psnr_at(r["webp"], p["bpp"])
    return None if at is None else p["psnr"] - at


def _longer_lines(r: dict) -> list[str]:
    out = []
    for p in r.get("longer", []):
        gap = webp_gap(r, p)
        out += [
            f"Trained longer: a hyperprior model at lambda {p['lmbda']:g} for {p['minutes']:g} minutes "
            f"({p['train_steps']:,} steps of {r['batch']}, {p['train_cpu_s']:.0f} CPU s; "
            f"{p['train_steps'] / r['steps']:.1f}x the budget above): {p['bytes_per_sample']:.1f} bytes a "
            f"crop ({p['side_ideal_bytes_per_sample']:.1f} of side information), {p['bpp']:.3f} bpp, "
            f"{p['psnr']:.2f} dB; "
            + (
                "WebP's curve does not span these bytes"
                if gap is None
                else f"{gap:+.2f} dB against WebP at them"
            )
            + "; x WebP at the same PSNR: "
            + _xb(p, "webp")
            + ", x JPEG: "
            + _xb(p, "jpeg")
            + ".",
            "",
        ]
    return out


def _xb(p: dict, name: str) -> str:
    v = p.get(f"x_{name}")
    return "-" if v is None else ("&ge; " if p.get(f"x_{name}_bound") == ">=" else "") + f"{v:.2f}"


def _digits_lines(d: dict | None) -> list[str]:
    if not d:
        return []
    lines = [
        "### The digits",
        "",
        f"rd models for the 8x8 digits (factorized prior, 32 latent channels at 1/8 of a side, one "
        f"latent of 32 values a digit, or at 1/4, 2x2 positions; width 32), trained from scratch for "
        f"{d['steps']} steps of {d['batch']} digits (the demo digits VAE's own budget) on the first "
        f"{d['train_rows']:,} digits, {d['threads']} torch threads; scored on the other "
        f"{d['heldout_rows']} through their own coder. Bytes per digit: the row's stream. x ELBO: over "
        "the demo digits VAE's archive bytes per row at the same PSNR (that model was trained on all "
        "1,797 digits, these included). x JPEG / WebP: per digit, and tiled (all held-out digits in "
        "one image, PSNR on each digit cut back out); x best: against the codec that needs the fewest "
        "bytes at that PSNR (&ge;: a lower bound, where that codec's lowest quality is already "
        "sharper; - where none reaches).",
        "",
    ]
    rows = [
        [
            f"1/{p['factor']}",
            f"{p['lmbda']:g}",
            f"{p['bytes_per_sample']:.1f}",
            f"{p['psnr']:.2f}",
            _x(p.get("x_elbo")),
            "-" if p.get("gain_over_elbo_db") is None else f"{p['gain_over_elbo_db']:+.2f}",
            _xb(p, "jpeg"),
            _xb(p, "webp"),
            _xb(p, "jpeg_tiled"),
            _xb(p, "webp_tiled"),
            _xb(p, "best"),
            f"{p['train_cpu_s']:.0f}",
        ]
        for p in d["points"]
    ]
    lines += table(
        [
            "factor",
            "lambda",
            "bytes/digit",
            "PSNR dB",
            "x ELBO",
            "gain over ELBO dB",
            "x JPEG",
            "x WebP",
            "x JPEG tiled",
            "x WebP tiled",
            "x best",
            "train CPU s",
        ],
        rows,
    )
    curves = [("ELBO", d["elbo"]), ("JPEG tiled", d["jpeg_tiled"]), ("WebP tiled", d["webp_tiled"])]
    lines += [
        "; ".join(
            f"{name}: "
            + ", ".join(
                f"{c['bytes_per_sample']:.1f} B {c['psnr']:.2f} dB"
                for c in sorted(curve, key=lambda c: c["bpp"])[:6]
            )
            for name, curve in curves
        )
        + " (each at its lowest settings).",
        "",
    ]
    return lines


def digits_best(results: dict) -> float | None:
    """The digits' rd point with the smallest bytes against the best classic codec, where that
    ratio is measured, not a bound."""
    d = results.get("learned", {}).get("digits")
    xs = [
        p["x_best"]
        for p in (d or {}).get("points", [])
        if p.get("x_best") is not None and p["x_best_bound"] == "="
    ]
    return min(xs) if xs else None


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
    for p in r.get("longer", []):
        gap = webp_gap(r, p)
        if gap is not None:
            what = f"photos, rd codec trained {p['minutes']:g} min: PSNR less WebP's at equal bytes >= 0 dB"
            out.append((what, gap, gap >= 0, "+.2f"))
    judged = compressai_worst(results)
    if judged is not None:
        worst, bounded = judged
        what = "rd codec bytes at equal PSNR <= 1.0x CompressAI's hyperprior, same steps (worst point" + (
            "; some ratios are lower bounds)" if bounded else ")"
        )
        out.append((what, worst, worst <= 1.0 and not bounded, ".2f"))
    best = digits_best(results)
    if best is not None:
        out.append(
            (
                "digits: rd codec < 1.0x the best of JPEG/WebP (per digit, tiled) at equal PSNR",
                best,
                best < 1.0,
                ".2f",
            )
        )
    hyper = [p for p in r["points"] if p["prior"] == "hyperprior"]
    enc = min(p["encode_codes_mb_s"] for p in hyper)
    dec = min(p["decode_codes_mb_s"] for p in hyper)
    out.append(("learned coder encode >= 30 MB/s of codes, one core", enc, enc >= 30, ".1f"))
    out.append(("learned coder decode >= 150 MB/s of codes, one core", dec, dec >= 150, ".1f"))
    return out
