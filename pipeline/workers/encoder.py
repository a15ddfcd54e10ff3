"""The encoder side that the encode and feature workers both compose: a shard's rows read,
converted to model arrays and run through the encoder, with their keys.

    read (prefetch thread: fsspec; image decode and to model arrays on the host workers)
      -> group rows by shape -> encoder (inference_mode, on the worker's device)
      -> Encoded: keys, sample layouts, latent shapes, posterior means and log-variances
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from pipeline.codec.quantize import QuantizerParams
from pipeline.codec.quantize_torch import quantize_tensor
from pipeline.core.errors import InputError
from pipeline.core.names import sample_keys
from pipeline.core.overlap import prefetch
from pipeline.core.value_range import ValueRange
from pipeline.data.readers import Batch, ReadOptions, iter_batches
from pipeline.data.resize import Preprocess, preprocessed
from pipeline.data.samples import ModelGroup, SampleLayout, model_groups
from pipeline.data.tiles import Window, tiled
from pipeline.ledger.completion import Stopwatch
from pipeline.ledger.shard import Shard
from pipeline.model.checkpoint import Checkpoint
from pipeline.model.nets.base import Posterior
from pipeline.model.precision import autocast, to_device


@dataclass(frozen=True)
class Encoded:
    """One batch after the encoder: rows in source order."""

    batch: Batch
    keys: list[str]
    layouts: list[SampleLayout]
    latent_shapes: list[tuple[int, ...]]
    means: list[np.ndarray]  # per row, (C, P)
    logvars: list[np.ndarray]
    inputs: list[np.ndarray]  # per row, what the model was given (its samples as read, when
    # the device made them model arrays: ``ModelGroup``)
    # per row, (C_active, P) codes when the batch was quantized on the device (``means`` and
    # ``logvars`` are then empty: they never left it), and how many values were clipped
    codes: list[np.ndarray] | None = None
    clipped: int = 0


def where(shard: Shard, row: int) -> tuple[str, int | None]:
    """The file and row an error should name: an image group's file has no rows."""
    return (shard.members[row], None) if shard.members else (shard.source, row)


def check_new_keys(shard: Shard, enc: Encoded, seen: set[str]) -> None:
    """Refuse a key already seen in this shard, naming its file and row; remember the rest."""
    for key, r in zip(enc.keys, enc.batch.rows, strict=True):
        if key in seen:
            uri, row = where(shard, r)
            raise InputError(uri, f"duplicate key {key!r}", row=row)
        if "\x00" in key:  # no file, tar member or URL can carry it downstream
            uri, row = where(shard, r)
            raise InputError(uri, f"key {key!r} holds a NUL character", row=row)
        seen.add(key)


def _where_in(shard: Shard, rows: range | list[int], i: int) -> tuple[str, int | None]:
    return where(shard, rows[i])


class Encoder:
    """A checkpoint's encoder over shards, on one device; model time goes to ``clock``."""

    def __init__(
        self,
        ckpt: Checkpoint,
        device: torch.device,
        read: ReadOptions,
        key_column: str | None,
        clock: Stopwatch,
        value_range: ValueRange | None = None,
        tile: int | None = None,
        dtype: torch.dtype = torch.float32,
        tile_margin: int = 0,
        preprocess: Preprocess | None = None,
    ) -> None:
        self.ckpt, self.device, self.read, self.key_column = ckpt, device, read, key_column
        # the data units the model's [0, 1] stands for: as asked, else as the model was trained
        self.value_range = value_range or ckpt.value_range
        self.tile = tile  # --tile: images go in as tiles of tile x tile pixels
        self.tile_margin = tile_margin  # ... each inside a window of this much more context
        self.preprocess = preprocess  # --size / --buckets: images resized and cropped first
        self.model = ckpt.model
        self.clock = clock
        self.dtype = dtype  # the precision the model runs at (pipeline.model.precision)
        # integer pixels made model arrays on the device (``ModelGroup``): None = on a GPU
        self.defer_scaling: bool | None = None

    def _prepared(
        self, shard: Shard, only: tuple[int, ...] | None, defer: bool
    ) -> Iterator[tuple[Batch, list[ModelGroup], list[SampleLayout], list[Window] | None]]:
        listed = shard.input_bytes() if shard.identity and not shard.members else None
        options = replace(self.read, only_rows=only, source_bytes=listed)
        for batch in iter_batches(shard.source, options, shard.members):
            places = None
            if self.preprocess is not None:
                batch = preprocessed(batch, self.preprocess, self._keys(shard, batch), shard.source)
            if self.tile:
                keys = self._keys(shard, batch)
                batch, places = tiled(batch, self.tile, keys, shard.source, self.tile_margin)
            groups, layouts = model_groups(
                batch.samples,
                self.ckpt.config,
                partial(_where_in, shard, batch.rows),
                self.value_range,
                defer,
            )
            if places is not None and self.tile_margin:  # the rows are the tiles, not their windows
                own = zip(layouts, places, strict=True)
                layouts = [replace(lay, shape=(p.h, p.w, *lay.shape[2:])) for lay, p in own]
            yield batch, groups, layouts, places if self.tile_margin else None

    def _own_cells(
        self, g: ModelGroup, post: Posterior, places: list[Window] | None
    ) -> Iterator[tuple[list[int], list[int], torch.Tensor, torch.Tensor]]:
        """A group's posterior means and log-variances (float32), with each row's position in
        the batch and in the group; tiles in windows cut to their own cells, in groups of
        tiles at one place in windows of one shape."""
        mean, logvar = post.mean.float(), post.logvar.float()
        if places is None:
            yield g.rows, list(range(len(g.rows))), mean, logvar
            return
        f = self.ckpt.config.downsample_factor  # type: ignore[union-attr]
        same: dict[tuple[int, int, int, int], list[int]] = {}
        for j, i in enumerate(g.rows):
            ys, xs = places[i].cells(f)
            same.setdefault((ys.start, ys.stop, xs.start, xs.stop), []).append(j)
        for (y0, y1, x0, x1), js in same.items():
            ys, xs = slice(y0, y1), slice(x0, x1)
            sel = torch.tensor(js, device=mean.device)
            own = mean.index_select(0, sel)[:, :, ys, xs].contiguous()
            yield [g.rows[j] for j in js], js, own, logvar.index_select(0, sel)[:, :, ys, xs].contiguous()

    def _keys(self, shard: Shard, batch: Batch) -> list[str]:
        col = self.key_column
        if batch.source_rows is not None and batch.ids is not None:  # tiles: keys made already
            return batch.ids
        if col is None:
            return batch.ids or sample_keys(shard.relpath, batch.rows)
        if col not in batch.columns:
            raise InputError(shard.source, f"missing key column {col!r}")
        return [str(v) for v in batch.columns[col]]

    @torch.inference_mode()
    def encoded(
        self, shard: Shard, quantizer: QuantizerParams | None = None, only: tuple[int, ...] | None = None
    ) -> Iterator[Encoded]:
        """Encoded batches; with ``quantizer``, quantized on the device and only the codes
        copied to the host; ``only``: those rows alone (calibration's sample)."""
        # on a GPU, integer pixels go to the device as they are and become model arrays there
        defer = quantizer is not None and (
            self.defer_scaling if self.defer_scaling is not None else self.device.type == "cuda"
        )
        for batch, groups, layouts, places in prefetch(lambda: self._prepared(shard, only, defer)):
            n = len(batch.samples)
            inputs: list[np.ndarray] = [np.empty(0)] * n
            means: list[np.ndarray] = [np.empty(0)] * n
            logvars: list[np.ndarray] = [np.empty(0)] * n
            codes: list[np.ndarray] = [np.empty(0)] * n
            shapes: list[tuple[int, ...]] = [()] * n
            clipped = 0
            for g in groups:
                x = model_input(g, self.device)
                with self.clock.timing():
                    with autocast(self.device, self.dtype):
                        post = self.model.encode(x)
                for idx, js, mean, logvar in self._own_cells(g, post, places):
                    lshape = tuple(mean.shape[1:])
                    with self.clock.timing():
                        if quantizer is not None:
                            group, k = quantize_tensor(mean.reshape(len(idx), lshape[0], -1), quantizer)
                            clipped += k
                        else:
                            m = mean.cpu().numpy()
                            lv = logvar.cpu().numpy()
                    for n, (i, j) in enumerate(zip(idx, js, strict=True)):
                        shapes[i] = lshape
                        inputs[i] = g.x[j] if places is None else places[i].pixels(g.x[j], g.scale is None)
                        if quantizer is not None:
                            codes[i] = group[n]
                        else:
                            means[i] = m[n].reshape(lshape[0], -1)
                            logvars[i] = lv[n].reshape(lshape[0], -1)
            yield Encoded(
                batch,
                self._keys(shard, batch),
                layouts,
                shapes,
                means,
                logvars,
                inputs,
                codes if quantizer is not None else None,
                clipped,
            )


def model_input(group: ModelGroup, device: torch.device) -> torch.Tensor:
    """A ``ModelGroup``'s model arrays on ``device``: copied there as they are, and, if they are
    samples as read, made model arrays there with ``pipeline.data.samples``' float32 arithmetic
    (the same values: tested on the CPU)."""
    x = to_device(group.x, device)
    r = group.scale
    if r is None:
        return x
    if group.channels_first:  # (N, H, W, C) -> (N, C, H, W)
        x = x.permute(0, 3, 1, 2)
    x = x.reshape(len(group.rows), *group.shape).to(torch.float32, memory_format=torch.contiguous_format)
    if r.lo == 0.0 and r.hi == 1.0:
        return x
    if r.lo != 0:
        x.sub_(torch.tensor(r.lo, dtype=torch.float32, device=x.device))
    # a tensor, not a Python number: a scalar divisor may become a multiplication by its
    # reciprocal, which can differ from numpy's division in the last bit
    return x.div_(torch.tensor(r.span, dtype=torch.float32, device=x.device))
