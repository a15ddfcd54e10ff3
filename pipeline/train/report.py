"""The training report's picture: loss curves and grids of originals above reconstructions."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Grid:
    title: str
    originals: list[np.ndarray]  # source-shaped samples
    reconstructions: list[np.ndarray]


def _displayable(x: np.ndarray) -> np.ndarray | None:
    """A source-shaped sample as an image in [0, 1], or None when it is not image-like."""
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if x.ndim == 1:
        side = int(math.isqrt(x.size))
        if side * side != x.size:
            return None
        x = x.reshape(side, side)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return np.clip(x, 0.0, 1.0) if x.ndim in (2, 3) else None


def per_value_bits(nats_per_sample: float, values_per_sample: int) -> float:
    """A loss in nats per sample as bits per stored value, the unit that compares across sample
    sizes (a 64x64x3 crop's -15,000 nats is -1.76 bits per value)."""
    return nats_per_sample / (values_per_sample * math.log(2))


def render(history: list[dict[str, float]], grids: list[Grid]) -> bytes:
    cols = max([len(g.originals) for g in grids] + [1])
    # Thumbnails of about 1.6 inches: large enough to judge a reconstruction by eye.
    fig = plt.figure(figsize=(max(10.0, cols * 1.6), 3.6 + 3.4 * len(grids)), dpi=100)
    spec = fig.add_gridspec(1 + 2 * len(grids), cols, height_ratios=[2.0] + [1.0] * 2 * len(grids))
    ax = fig.add_subplot(spec[0, :])
    epochs = [h["epoch"] for h in history]
    values = next((int(g.originals[0].size) for g in grids if g.originals), 1)
    if history and "val_bpp" in history[0]:  # an rd model: its loss, and the rate it codes at
        ax.plot(epochs, [h["train_loss"] for h in history], label="train loss (lambda 255^2 MSE + bpp)")
        ax.plot(epochs, [h["val_bpp"] for h in history], label="validation bits per pixel")
        ax.set_ylabel("loss; bits per pixel")
    else:
        ax.plot(
            epochs,
            [per_value_bits(h["train_loss"], values) for h in history],
            label="train loss (-ELBO with beta_t)",
        )
        ax.plot(
            epochs, [per_value_bits(-h["val_elbo_nats"], values) for h in history], label="validation -ELBO"
        )
        ax.set_ylabel(f"bits per value ({values} values a sample;\nbelow 0: a density, not a code length)")
    ax.set_xlabel("epoch")
    ax.legend(loc="upper left")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_psnr_db"] for h in history], color="tab:green", label="val PSNR")
    ax2.set_ylabel("validation PSNR (dB)", color="tab:green")
    for g_i, grid in enumerate(grids):
        for row, images in enumerate((grid.originals, grid.reconstructions)):
            for c, img in enumerate(images):
                a = fig.add_subplot(spec[1 + 2 * g_i + row, c])
                shown = _displayable(img)
                if shown is not None:
                    a.imshow(
                        shown,
                        cmap="gray" if shown.ndim == 2 else None,
                        vmin=0,
                        vmax=1,
                        interpolation="nearest",
                    )
                a.set_xticks([]), a.set_yticks([])
                if c == 0:
                    a.set_ylabel("original" if row == 0 else "decoded", fontsize=8)
                if c == 0 and row == 0:
                    a.set_title(grid.title, fontsize=9, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
