"""Quality against other stores: rate-distortion against classic codecs, latent features."""

from __future__ import annotations

from jobs.benches.report.common import (
    DIGIT_CODECS,
    ratio,
    table,
)


def rd_section(results: dict, out: str) -> list[str]:
    if "rd" not in results:
        return []
    lines: list[str] = []
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
    lines += table(
        ["vaezip step (sigmas)", "bpp", "PSNR dB", "SSIM", "x JPEG", "x WebP"],
        [
            [
                str(v["step_sigmas"]),
                f"{v['bpp']:.3f}",
                f"{v['psnr']:.2f}",
                f"{v['ssim']:.3f}",
                ratio(r, "jpeg"),
                ratio(r, "webp"),
            ]
            for v, r in zip(rd["photos_per_sample"]["vaezip"], rd["photos_ratios"], strict=True)
        ],
    )
    lines += table(["lossless", "bpp"], [[c["codec"], f"{c['bpp']:.2f}"] for c in rd["photos_lossless"]])
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
    lines += table(["image", "codec", "step / quality", "bpp", "PSNR dB"], rows)
    if "lossless" in rd["photos_whole"]:
        lines += table(
            ["image", "lossless", "bpp"],
            [
                [name, c["codec"], f"{c['bpp']:.2f}"]
                for name, cs in zip(rd["photos_whole"]["names"], rd["photos_whole"]["lossless"], strict=True)
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
    lines += table(
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
                *[ratio(r, c) for c in DIGIT_CODECS],
            ]
            for v, r in zip(rd["digits"]["vaezip"], rd["digits_ratios"], strict=True)
        ],
    )
    lines += table(
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
    return lines


def features_section(results: dict, out: str) -> list[str]:
    if "features" not in results:
        return []
    lines: list[str] = []
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
    return lines


def seams_section(results: dict, out: str) -> list[str]:
    if "seams" not in results:
        return []
    s = results["seams"]
    runs = [k for k, v in s.items() if isinstance(v, dict) and "bytes" in v]
    whole = s[runs[0]]
    sizes = ", ".join(f"{k} {v[1]}x{v[0]}" for k, v in s["photos"].items())
    lines = [
        "## Tiles against whole images",
        "",
        f"The held-out demo photos ({sizes}), each archived by the real jobs whole and as tiles of "
        f"{s['tile']} pixels, decoded to PNGs. PSNR over both photos against the originals; "
        f"border: the pixels within {s['border_px']} of an inner tile edge, their mean squared error "
        "over the other pixels' (the whole-image archive's ratio, for the same pixels, is the photos' "
        "own). Times are the jobs' wall time, Ray's start included.",
        "",
    ]
    rows = []
    for k in runs:
        v = s[k]
        rows.append(
            [
                k,
                f"{v['bytes']:,}",
                f"{v['psnr_db']:.2f}",
                f"{v['psnr_db'] - whole['psnr_db']:+.2f}",
                f"{v['border_mse']:.1f} / {v['interior_mse']:.1f}",
                f"{v['border_ratio']:.2f}",
                f"{v['encode_s']:.0f} / {v['decode_s']:.0f}",
            ]
        )
    lines += table(
        [
            "archive",
            "bytes",
            "PSNR dB",
            "vs whole",
            "MSE border / interior",
            "border ratio",
            "encode / decode s",
        ],
        rows,
    )
    return lines
