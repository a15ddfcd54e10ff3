"""Reading archives back: batches of dequantized latents, and the decoder that turns latents
into samples. The decode job, the PyTorch dataset, the Ray Data path and ``inspect`` all read
through here.

    format.iter_stored(file)          -> stored rows (CodeRows), page checksums verified
    iter_latents(file)                -> LatentBatch: keys, dequantized latents, sample layouts,
                                         passthrough columns (every crc and field checked)
    SampleDecoder(ckpt).samples(...)  -> samples in their source's shape and dtype
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.codec.codec import Codec
from pipeline.codec.compress import decompress
from pipeline.codec.format import ArchiveMeta, CodeRows, iter_stored, read_meta
from pipeline.codec.quantize import QuantizerParams
from pipeline.codec.quantize_torch import dequantize_tensor
from pipeline.core.errors import InputError
from pipeline.data.rd_rows import Hyper
from pipeline.data.samples import SUPPORTED_DTYPES, SampleLayout
from pipeline.model.checkpoint import Checkpoint
from pipeline.model.precision import autocast, to_device


@dataclass(frozen=True)
class LatentBatch:
    """Consecutive rows of one archive file, from row ``start``."""

    uri: str
    start: int
    keys: list[str]
    latents: list[np.ndarray]  # per row, dequantized, shaped as vz_latent_shape
    layouts: list[SampleLayout]  # per row, the source sample's shape and dtype
    columns: dict[str, list]  # passthrough columns
    # set when ``latents`` holds the stored channels' integer codes instead, for the decoder
    # to dequantize on its device (iter_latents(on_device=True))
    quantizer: QuantizerParams | None = None


def latents_of(
    meta: ArchiveMeta, codec: Codec, uri: str, start: int, rows: CodeRows, dequantized: bool = True
) -> tuple[list[np.ndarray], list[SampleLayout]]:
    """Stored rows -> dequantized latents (or codes) and the source samples' layouts, every
    field checked."""
    latents = decompress(
        rows.codes, rows.crc32, rows.latent_shapes, meta.quantizer, codec, uri, start, dequantized
    )
    try:
        layouts = [
            SampleLayout(tuple(int(v) for v in s), str(d), meta.value_range)
            for s, d in zip(rows.shapes, rows.dtypes, strict=True)
        ]
    except (TypeError, ValueError) as err:
        raise InputError(uri, f"bad sample shape or dtype ({err})", row=start) from err
    for i, lay in enumerate(layouts):
        if lay.dtype not in SUPPORTED_DTYPES:
            raise InputError(uri, f"unknown sample dtype {lay.dtype!r}", row=start + i)
    return latents, layouts


def iter_latents(
    uri: str,
    batch_rows: int = 256,
    columns: list[str] | None = None,
    meta: ArchiveMeta | None = None,
    on_device: bool = False,
    data: bytes | None = None,
    hyper: Hyper | None = None,
) -> Iterator[LatentBatch]:
    """One archive file as batches of dequantized latents, in row order. ``columns`` limits
    the passthrough columns read (default: all). ``on_device``: the batches hold codes, for
    ``SampleDecoder`` to dequantize on its device (a quarter of the bytes to copy there).
    ``data``: the file's bytes, where the caller has read (and checked) them. ``hyper``: an rd
    hyperprior's side steps (``pipeline.data.rd_rows.hyper_of``), which its codes need."""
    meta = meta or read_meta(uri)
    codec = Codec(meta.codec, hyper)
    for stored in iter_stored(uri, batch_rows, columns, data):
        latents, layouts = latents_of(meta, codec, uri, stored.start, stored.rows, not on_device)
        yield LatentBatch(
            uri,
            stored.start,
            stored.rows.keys,
            latents,
            layouts,
            stored.columns,
            meta.quantizer if on_device else None,
        )


class SampleDecoder:
    """The checkpoint's decoder over latents from an archive, on one device."""

    def __init__(self, ckpt: Checkpoint, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.ckpt, self.device, self.dtype = ckpt, device, dtype
        self.model = ckpt.model.to(device).eval()

    @torch.inference_mode()
    def run_model(
        self,
        latents: list[np.ndarray],
        layouts: list[SampleLayout],
        quantizer: QuantizerParams | None = None,
    ) -> list[tuple[list[int], np.ndarray]]:
        """Rows grouped by latent and sample shape -> the decoder's (N, ...) output per group.
        With ``quantizer``, ``latents`` are codes, dequantized on the device."""
        groups: dict[tuple, list[int]] = {}
        for i, (z, lay) in enumerate(zip(latents, layouts, strict=True)):
            groups.setdefault((z.shape, lay.shape), []).append(i)
        out = []
        for (_, sample_shape), idx in groups.items():
            zs = to_device(np.stack([latents[i] for i in idx]), self.device)
            if quantizer is not None:
                zs = dequantize_tensor(zs, quantizer)
            size = None if self.ckpt.config.kind == "mlp" else (sample_shape[0], sample_shape[1])
            with autocast(self.device, self.dtype):
                y = self.model.decode(zs, size)
            out.append((idx, y.float().clamp(0.0, 1.0).cpu().numpy()))
        return out

    @torch.inference_mode()
    def run_windows(
        self, windows: list[tuple[np.ndarray, tuple[int, int]]], layouts: list[SampleLayout]
    ) -> list[tuple[list[int], np.ndarray]]:
        """Tiles decoded in context (``pipeline.data.tiles.context_windows``): each window's
        latents decoded whole, and only its tile's pixels (from the offset, the layout's size)
        kept; grouped as ``run_model`` groups them."""
        groups: dict[tuple, list[int]] = {}
        for i, ((z, at), lay) in enumerate(zip(windows, layouts, strict=True)):
            groups.setdefault((z.shape, at, lay.shape[:2]), []).append(i)
        out = []
        for (_, (top, left), (h, w)), idx in groups.items():
            zs = to_device(np.stack([windows[i][0] for i in idx]), self.device)
            with autocast(self.device, self.dtype):
                y = self.model.decode(zs)
            out.append((idx, y[:, :, top : top + h, left : left + w].float().clamp(0.0, 1.0).cpu().numpy()))
        return out

    @staticmethod
    def restore(
        outputs: list[tuple[list[int], np.ndarray]], layouts: list[SampleLayout], uri: str, start: int
    ) -> list[np.ndarray]:
        """Decoder outputs -> samples in their source's shape and dtype, in row order."""
        rows: list[np.ndarray] = [np.empty(0)] * len(layouts)
        for idx, x in outputs:
            by_layout: dict[SampleLayout, list[int]] = {}
            for j, i in enumerate(idx):
                by_layout.setdefault(layouts[i], []).append(j)
            for lay, js in by_layout.items():
                try:
                    restored = lay.restore_batch(x[js])
                except ValueError as err:
                    raise InputError(
                        uri,
                        f"stored shape {lay.shape} does not fit the decoder's output {x.shape[1:]}",
                        row=start + idx[js[0]],
                    ) from err
                for j, r in zip(js, restored, strict=True):
                    rows[idx[j]] = r
        return rows

    def samples(self, batch: LatentBatch) -> list[np.ndarray]:
        return self.restore(
            self.run_model(batch.latents, batch.layouts), batch.layouts, batch.uri, batch.start
        )


def check_model(meta: ArchiveMeta, ckpt: Checkpoint, uri: str) -> None:
    if meta.model_fingerprint != ckpt.fingerprint:
        raise InputError(
            uri,
            f"archive was written with model {meta.model_fingerprint[:12]}..., "
            f"the checkpoint is {ckpt.fingerprint[:12]}...; "
            "decode with the checkpoint that encoded it",
        )
