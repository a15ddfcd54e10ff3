"""Rows through an RD model's own coder: images -> one stream per row -> images.

    encode: y = g_a(x) -> y_hat = round(y)
            hyperprior: z_hat = round(h_a(y)) (factorized prior); h_a of the latent before
                        rounding, as it was trained
                        sigma = h_s(z_hat) in float64 on the CPU -> ladder indexes
                        -> y_hat (Gaussian conditional), in the same stream after z_hat
            factorized: y_hat under the factorized prior
    decode: the stream's z_hat -> the same indexes -> the rest of it: y_hat -> g_s

The hyper-synthesis that chooses each latent's table runs in float64 on the CPU at both ends,
whatever device runs the transforms, so the encoder's indexes are the decoder's: a scale a
hair's breadth from a ladder step could otherwise round to another step on another device,
and every value after it would decode wrong.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.codec.codec import CodecParams
from pipeline.codec.learned import (
    LearnedTables,
    decode_streams,
    encode_rows,
    tables_to_bytes,
)
from pipeline.codec.quantize import QuantizerParams, rounded
from pipeline.model.entropy import scale_indexes, scale_ladder
from pipeline.model.nets.rd import RDModel


@dataclass(frozen=True)
class CodedRow:
    stream: bytes  # z under the factorized prior (a hyperprior's), then y under its prior or conditional
    latent_shape: tuple[int, int, int]  # y's (channels, height, width)


class Hyper:
    """What the learned codec needs of an rd hyperprior: the side information of a latent
    (``side``: z = round(h_a(y)) of y before rounding, computed once at encode and stored; the
    decoder never recomputes it, so it need not be exact across devices) and each latent's table
    from the side information (``indexes``: h_s in float64 on the CPU, at both ends)."""

    def __init__(self, model: RDModel) -> None:
        if not model.hyper:
            raise ValueError("a factorized rd model has no hyperprior")
        self._h_a = copy.deepcopy(model.h_a).to("cpu", torch.float32).eval()
        self._h_s = copy.deepcopy(model.h_s).to("cpu", torch.float64).eval()

    @torch.no_grad()
    def side(self, y: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents as the encoder gave them (rounded ones work, at more bytes)
        -> (N, Cz, h/4, w/4) rounded hyper-latents."""
        z = self._h_a(torch.from_numpy(y.astype(np.float32)).abs())
        return torch.round(z).numpy().astype(np.int64)

    @torch.no_grad()
    def indexes(self, z: np.ndarray, height: int, width: int) -> np.ndarray:
        sigma = self._h_s(torch.from_numpy(z.astype(np.float64)))[:, :, :height, :width]
        return scale_indexes(sigma).numpy()


class RDCoder:
    def __init__(self, model: RDModel, tables: LearnedTables | None = None) -> None:
        self.model = model.eval()
        if tables is None:
            offsets, probs = model.prior.tables()
            tables = LearnedTables(offsets=offsets, probs=probs, ladder=scale_ladder())
        self.tables = tables
        self.hyper = Hyper(model) if model.hyper else None

    def _indexes(self, z_hat: np.ndarray, height: int, width: int) -> np.ndarray:
        assert self.hyper is not None
        return self.hyper.indexes(z_hat, height, width)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[CodedRow]:
        """``x`` (N, C, H, W) in 0..1 on the model's device."""
        y_float = self.model.encode(x).mean
        y = torch.round(y_float).cpu().numpy().astype(np.int64)
        streams = encode_rows(y, self.tables, self.hyper, y_float.cpu().numpy())
        return [CodedRow(s, y.shape[1:]) for s in streams]

    def latents(self, rows: list[CodedRow]) -> np.ndarray:
        """The rounded latents y of rows of one latent shape, (N, channels, height, width) int64:
        every row's side information first, then one hyper-synthesis for all of them, then the
        rest of each stream."""
        shapes = {r.latent_shape for r in rows}
        if len(shapes) != 1:
            raise ValueError(f"rows of one latent shape at a time, got {sorted(shapes)}")
        ((m, h, w),) = shapes
        values = decode_streams([r.stream for r in rows], self.tables, self.hyper, h, w)
        return values.reshape(len(rows), m, h, w)

    @torch.no_grad()
    def decode(self, rows: list[CodedRow], size: tuple[int, int]) -> torch.Tensor:
        """Rows of one latent shape back to (N, C, H, W) images cropped to ``size``."""
        device = next(self.model.parameters()).device
        y = torch.from_numpy(self.latents(rows)).to(device, torch.float32)
        return self.model.decode(y, size)


def hyper_of(model: object) -> Hyper | None:
    """The learned codec's side steps for ``model``: an rd hyperprior's, else None."""
    return Hyper(model) if isinstance(model, RDModel) and model.hyper else None


def learned_params(model: RDModel) -> tuple[QuantizerParams, CodecParams]:
    """An rd model's quantizer (its latents rounded) and codec (its priors' integer tables):
    fixed by the model, so an rd encode fits nothing on calibration rows."""
    offsets, probs = model.prior.tables()
    given = LearnedTables(offsets=offsets, probs=probs, ladder=scale_ladder()).given
    hyper_channels = model.config.hidden_channels if model.hyper else 0
    blob = tables_to_bytes(given, model.config.latent_channels, hyper_channels)
    codec = CodecParams(level=1, layout="channel", framing="row", name="learned", model=blob)
    return rounded(model.config.latent_channels), codec
