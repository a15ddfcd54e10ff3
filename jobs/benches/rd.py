"""Rate-distortion against the codecs users would pick instead, on samples training never saw.

Per sample (one file per crop, as datasets store samples) and per whole image. Bits per pixel
count every byte a sample needs: the image file for JPEG/WebP/PNG, the zstd frame of raw
pixels, and for vaezip the archive file (codes, keys, checksums, shapes) divided by its rows;
its footer, once per file of up to thousands of rows, is reported apart.
"""

from __future__ import annotations

import io

import numpy as np
import zstandard
from PIL import Image
from skimage.metrics import structural_similarity

from jobs.benches.latents import Latents, encode, psnr, reconstruct, vaezip_codes
from pipeline.codec.quantize import QuantizerConfig
from pipeline.data.grid import tile, untile
from pipeline.model.checkpoint import Checkpoint

QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
STEPS = (0.5, 1.0, 2.0, 4.0, 8.0)


def _roundtrip(x: np.ndarray, fmt: str, **kw) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    img = Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x)
    img.save(buf, format=fmt, **kw)
    data = buf.getvalue()
    back = np.asarray(Image.open(io.BytesIO(data)).convert(img.mode)).reshape(x.shape)
    return len(data), back


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    axis = -1 if a.ndim == 4 else None
    vals = [
        structural_similarity(
            x, y, channel_axis=axis, data_range=255, win_size=min(7, min(x.shape[:2]) // 2 * 2 - 1)
        )
        for x, y in zip(a, b, strict=True)
    ]
    return float(np.mean(vals))


def classic_curve(samples: np.ndarray, fmt: str, qualities=QUALITIES) -> list[dict]:
    pixels = samples[0].shape[0] * samples[0].shape[1]
    out = []
    for q in qualities:
        kw = {"quality": q} if fmt in ("JPEG", "WEBP") else {}
        sizes, backs = zip(*(_roundtrip(x, fmt, **kw) for x in samples), strict=True)
        back = np.stack(backs)
        out.append(
            {
                "codec": fmt.lower(),
                "quality": q,
                "bpp": 8 * float(np.mean(sizes)) / pixels,
                "bytes_per_sample": float(np.mean(sizes)),
                "psnr": psnr(back, samples),
                "ssim": ssim(back, samples),
            }
        )
        if fmt == "PNG":
            break
    return out


def tiled_curve(samples: np.ndarray, fmt: str, qualities=QUALITIES) -> list[dict]:
    """All samples in one tiled image (as a sprite sheet stores small images): bytes and PSNR
    per sample, the PSNR measured on each sample cut back out."""
    pixels = samples[0].shape[0] * samples[0].shape[1]
    image = tile(samples)
    out = []
    for q in qualities:
        kw = {"quality": q} if fmt in ("JPEG", "WEBP") else {}
        size, back = _roundtrip(image, fmt, **kw)
        back = untile(back, len(samples), samples.shape[1:])
        out.append(
            {
                "codec": f"{fmt.lower()} tiled",
                "quality": q,
                "bpp": 8 * size / len(samples) / pixels,
                "bytes_per_sample": size / len(samples),
                "psnr": psnr(back, samples),
            }
        )
        if fmt == "PNG":
            break
    return out


def lossless(samples: np.ndarray) -> list[dict]:
    pixels = samples[0].shape[0] * samples[0].shape[1]
    png = classic_curve(samples, "PNG")[0]
    z = zstandard.ZstdCompressor(level=19)
    zbytes = float(np.mean([len(z.compress(x.tobytes())) for x in samples]))
    return [
        {"codec": "png", "bpp": png["bpp"], "bytes_per_sample": png["bytes_per_sample"]},
        {"codec": "zstd-19 raw", "bpp": 8 * zbytes / pixels, "bytes_per_sample": zbytes},
        {"codec": "raw", "bpp": 8.0 * samples[0].size / pixels, "bytes_per_sample": float(samples[0].size)},
    ]


def vaezip_curve(
    ckpt: Checkpoint, samples: np.ndarray, steps=STEPS, lat: Latents | None = None, shown: list | None = None
) -> list[dict]:
    """vaezip at each quantizer step; ``shown`` (if given) receives 8 reconstructions spread
    over the samples (``spread(samples)``) at each step, for the grid picture."""
    lat = lat or encode(ckpt, samples)
    pixels = samples[0].shape[0] * samples[0].shape[1]
    out = []
    for s in steps:
        st = vaezip_codes(ckpt, lat, samples, QuantizerConfig(mode="posterior", step_sigmas=s))
        back = reconstruct(ckpt, st.latents, lat.shape, samples)
        if shown is not None:
            shown.append((s, spread(back)))
        per = st.row_bytes / len(samples)
        out.append(
            {
                "codec": "vaezip",
                "step_sigmas": s,
                "bpp": 8 * per / pixels,
                "bytes_per_sample": per,
                "code_bytes_per_sample": st.code_bytes / len(samples),
                "footer_bytes": st.footer_bytes,
                "psnr": psnr(back, samples),
                "ssim": ssim(back, samples),
            }
        )
    return out


def bpp_at(curve: list[dict], target_psnr: float) -> float | None:
    """The curve's bpp at ``target_psnr``, interpolated linearly; None outside its range."""
    pts = sorted((c["psnr"], c["bpp"]) for c in curve)
    ps, bs = [p for p, _ in pts], [b for _, b in pts]
    if not ps[0] <= target_psnr <= ps[-1]:
        return None
    return float(np.interp(target_psnr, ps, bs))


def psnr_at(curve: list[dict], bpp: float) -> float | None:
    """The curve's PSNR at ``bpp``, interpolated linearly; None outside its range."""
    pts = sorted((c["bpp"], c["psnr"]) for c in curve)
    if not pts or not pts[0][0] <= bpp <= pts[-1][0]:
        return None
    return float(np.interp(bpp, [b for b, _ in pts], [q for _, q in pts]))


def bpp_against(curve: list[dict], target_psnr: float) -> tuple[float | None, str]:
    """The codec's bpp to set a point's against at ``target_psnr``, and what a ratio over it is.

    Where the codec's lowest setting already gives a higher PSNR, its bpp at the target is at
    most that setting's, so a ratio over it is a lower bound (">="); else interpolated ("=").
    Where the codec never reaches the target: None."""
    b = bpp_at(curve, target_psnr)
    if b is None and target_psnr < min(c["psnr"] for c in curve):
        return min(c["bpp"] for c in curve), ">="
    return b, "="


def ratio_against(curve: list[dict], point: dict) -> tuple[float | None, str]:
    """The point's bpp over the codec's at the point's PSNR, and whether that is a lower bound
    (``bpp_against``); None where the codec never reaches the PSNR."""
    b, mark = bpp_against(curve, point["psnr"])
    return (None if b is None else point["bpp"] / b), mark


def ratios(vaezip: list[dict], others: dict[str, list[dict]]) -> list[dict]:
    """For each vaezip point: its bpp over each codec's bpp at the same PSNR (``bpp_against``:
    ``<name>_bound`` says whether it is a lower bound)."""
    out = []
    for v in vaezip:
        row = {"step_sigmas": v["step_sigmas"], "psnr": v["psnr"], "bpp": v["bpp"]}
        for name, curve in others.items():
            row[name], row[f"{name}_bound"] = ratio_against(curve, v)
        out.append(row)
    return out


def classifier_accuracy(ckpt: Checkpoint, images: np.ndarray) -> dict:
    """A classifier trained on original digits, scored on held-back originals and on vaezip's
    reconstructions of them (default quantizer)."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.data.demo_data import digits as load_digits

    raw, labels = load_digits()
    assert np.array_equal(raw, images)
    split = 1200
    clf = LogisticRegression(max_iter=5000).fit(raw[:split].reshape(split, -1) / 255.0, labels[:split])
    test = raw[split:]
    lat = encode(ckpt, test)
    rec = reconstruct(ckpt, vaezip_codes(ckpt, lat, test, QuantizerConfig()).latents, lat.shape, test)
    flat = len(test), -1
    return {
        "train_rows": split,
        "test_rows": len(test),
        "accuracy_original": float(clf.score(test.reshape(flat) / 255.0, labels[split:])),
        "accuracy_vaezip": float(clf.score(rec.reshape(flat) / 255.0, labels[split:])),
    }


def feature_probe(ckpt: Checkpoint, images: np.ndarray, split: int = 1200) -> dict:
    """A linear probe: logistic regression on raw pixels against the same on the encoder's
    posterior means (what ``jobs.features`` exports), same train/test split of the digits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from pipeline.data.demo_data import digits as load_digits

    raw, labels = load_digits()
    assert np.array_equal(raw, images)
    pixels = raw.reshape(len(raw), -1) / 255.0
    means = encode(ckpt, raw).mean.reshape(len(raw), -1)
    out: dict[str, float] = {
        "train_rows": split,
        "test_rows": len(raw) - split,
        "pixel_dims": int(pixels.shape[1]),
        "feature_dims": int(means.shape[1]),
    }
    for name, x in (("pixels", pixels), ("features", means)):
        scaler = StandardScaler().fit(x[:split])
        clf = LogisticRegression(max_iter=5000).fit(scaler.transform(x[:split]), labels[:split])
        out[f"accuracy_{name}"] = float(clf.score(scaler.transform(x[split:]), labels[split:]))
    return out


def spread(x: np.ndarray, n: int = 8) -> np.ndarray:
    return x[:: max(1, len(x) // n)][:n]


def grid_picture(originals: np.ndarray, shown: list, curve: list[dict]) -> bytes:
    """PNG: the originals in the top row, then vaezip's reconstructions at each step, each row
    labelled with its step, bytes per sample and PSNR (small samples enlarged pixel for pixel)."""
    from PIL import ImageDraw

    from pipeline.data.grid import tile

    rows = [("original", spread(originals))] + [
        (f"step {s:g} sigma: {c['bytes_per_sample']:.0f} B, {c['psnr']:.1f} dB", x)
        for (s, x), c in zip(shown, curve, strict=True)
    ]
    zoom = max(1, 48 // originals.shape[1])
    strips = []
    for _, x in rows:
        big = x.repeat(zoom, axis=1).repeat(zoom, axis=2)  # enlarge, then 2 px white between
        strips.append(tile(big, columns=len(x), gap=2, fill=255 if big.dtype == np.uint8 else 1.0))
    label_w, h = 260, strips[0].shape[0]
    width = label_w + strips[0].shape[1]
    canvas = Image.new("RGB", (width, h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((label, _), strip) in enumerate(zip(rows, strips, strict=True)):
        img = Image.fromarray(strip).convert("RGB")
        canvas.paste(img, (label_w, i * h))
        draw.text((6, i * h + h // 2 - 6), label, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
