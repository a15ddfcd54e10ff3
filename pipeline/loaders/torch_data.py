"""A PyTorch ``IterableDataset`` over an archive: stream latents (or decoded samples) straight
into training, with nothing but the archive and, for samples, the checkpoint.

    ds = ArchiveDataset("s3://latents/run1")                       # dequantized latents
    ds = ArchiveDataset("archive/", checkpoint="ckpt/", decode=True)   # decoded samples
    for item in DataLoader(ds, batch_size=None, num_workers=4): ...

    # training: shuffled per epoch, equal batches on every rank, resumable mid-epoch
    ds = ArchiveDataset("s3://latents/run1", shuffle=True, seed=0, batch_size=32,
                        dtype=torch.bfloat16, cache_dir="/local/cache")
    loader = DataLoader(ds, batch_size=None, num_workers=4)
    for epoch in range(n):
        ds.set_epoch(epoch)
        for step, batch in enumerate(loader): ...        # batch["latent"]: (32, C, H, W)
    ds.load_state_dict({"epoch": e, "batches": step})    # resume: the batches still to come

Which rows go where (``pipeline.loaders.order``): the archive's rows, as its manifest counts
them, in file order (shuffled per ``seed`` and epoch), are cut into one unit per (rank,
DataLoader worker) of equal size ("pad" wraps round to fill, "drop" leaves the remainder out;
"keep": every row exactly once, units one row apart). Ranks come from ``torch.distributed``
when it is initialized, else ``rank``/``world_size``. With ``shuffle``, each unit's rows also
pass a shuffle buffer of ``shuffle_buffer`` rows. The same seed and epoch give the same order.

With ``batch_size`` the dataset batches: rows of one latent shape only. An archive of several
shapes (bucketed at encode) is split shape by shape in whole batches (``order.bucket_pieces``,
from each file's rows of each shape, one column read a file when the dataset is made), so with
"drop" and "pad" every unit still gets as many batches; "keep" gives a short batch per shape.
Resuming counts batches, assuming the DataLoader takes them from its workers in turn (its
default, ``in_order=True``).

Items are dicts: ``key``, ``latent`` (the archive's latent shape; numpy float32 by default,
a torch tensor of ``dtype`` where given) or ``sample`` (the source's shape and dtype), and
every passthrough column (labels, captions, ids). Latents are in the space the archive holds
them: the VAE's own means for vaezip's models, ``(z - shift_factor) * scaling_factor`` for a
diffusers AutoencoderKL (what a diffusion model trains on); ``normalize=True`` also applies a
diffusers config's ``latents_mean``/``latents_std`` (SDXL-style), per channel.

What decode checks, this checks: every file the manifest (or the completion records) lists
must be there; each file is read once, its size and sha256 checked against its record before
any of its rows is handed out, and its own footer gives its quantizer and codec. A file that
fails raises ``InputError`` naming it. ``cache_dir``: remote files kept there by their sha256
after the first read (and checked again when read from there).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.codec.format import latent_shape_counts, read_footer
from pipeline.core.errors import ConfigError, InputError
from pipeline.data.archive import SampleDecoder, check_model, iter_latents
from pipeline.data.rd_rows import Hyper, hyper_of
from pipeline.ledger.integrity import CHANGED, listed_files, read_verified
from pipeline.ledger.shard import Listed
from pipeline.loaders.order import (
    REMAINDERS,
    Piece,
    bucket_pieces,
    file_order,
    shape_bounds,
    shuffled,
    unit_bounds,
    unit_pieces,
)
from pipeline.model.checkpoint import load_checkpoint


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ArchiveDataset(IterableDataset):
    def __init__(
        self,
        archive: str,
        checkpoint: str | None = None,
        decode: bool = False,
        columns: list[str] | None = None,
        batch_rows: int = 256,
        device: str = "cpu",
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 1024,
        remainder: str = "pad",
        batch_size: int | None = None,
        dtype: torch.dtype | None = None,
        normalize: bool = False,
        cache_dir: str | None = None,
        num_workers: int = 1,
    ) -> None:
        if decode and checkpoint is None:
            raise ConfigError("decode=True needs the checkpoint that encoded the archive")
        if remainder not in REMAINDERS:
            raise ConfigError(f"remainder must be one of {REMAINDERS}, got {remainder!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.listed = listed_files(archive)
        missing = [f for f in self.listed if f.rows is None]
        if missing:  # the split needs every file's row count: what the manifest records
            raise InputError(missing[0].uri, str(missing[0].problem(size=False)))
        self.files = [f.uri for f in self.listed]
        self.checkpoint, self.decode, self.columns = checkpoint, decode, columns
        self.batch_rows, self.device = batch_rows, device
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, shuffle_buffer
        self.remainder, self.batch_size, self.dtype = remainder, batch_size, dtype
        self.normalize, self.cache_dir = normalize, cache_dir
        self.epoch, self.skip_batches = 0, 0
        self.workers = max(1, num_workers)
        # batches of one latent shape: each file's rows of each shape, where there are several
        self.shapes = _shape_counts(self.files) if batch_size is not None else None
        self._seen = _distributed()  # again at set_epoch and len(), in the main process

    # --- the split ---------------------------------------------------------------------------

    def _world(self) -> tuple[int, int]:
        """(rank, world size): as given, else torch.distributed's, as the main process saw it
        (a DataLoader worker process has no process group of its own)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self._seen = _distributed()
        rank, world = self._seen
        return (
            self.rank if self.rank is not None else rank,
            self.world_size if self.world_size is not None else world,
        )

    def _unit(self) -> tuple[int, int, int]:
        """This (rank, worker)'s unit, the number of units, and the number of workers."""
        rank, world = self._world()
        worker, workers = self._worker()
        return rank * workers + worker, world * workers, workers

    def pieces(self) -> list[Piece]:
        """The rows this rank and DataLoader worker read this epoch, in order (before the
        shuffle buffer)."""
        unit, units, _ = self._unit()
        rows = [int(f.rows or 0) for f in self.listed]
        order = file_order(len(rows), self.seed, self.epoch, self.shuffle)
        if self.shapes is not None:
            assert self.batch_size is not None
            return bucket_pieces(self.shapes, order, units, unit, self.batch_size, self.remainder)
        return unit_pieces(rows, order, *unit_bounds(sum(rows), units, unit, self.remainder))

    def __len__(self) -> int:
        """Rows (with ``batch_size``: batches) this rank gets per epoch with ``num_workers``
        DataLoader workers (the split is per worker, so pass the DataLoader's number)."""
        rank, world = self._world()
        units = world * self.workers
        mine = [rank * self.workers + w for w in range(self.workers)]
        if self.shapes is not None:  # batches of one shape, each shape cut apart
            assert self.batch_size is not None
            bs = self.batch_size
            cuts = [
                shape_bounds(sum(c.get(shape, 0) for c in self.shapes), units, u, bs, self.remainder)
                for shape in {s for c in self.shapes for s in c}
                for u in mine
            ]
            return sum(-(-(b - a) // bs) for a, b in cuts)  # whole batches but with "keep"
        total = sum(int(f.rows or 0) for f in self.listed)
        sizes = [b - a for a, b in (unit_bounds(total, units, u, self.remainder) for u in mine)]
        if self.batch_size is None:
            return sum(sizes)
        bs = self.batch_size
        return sum(n // bs if self.remainder != "keep" else -(-n // bs) for n in sizes)

    # --- epochs and resuming -----------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration gives (call it before each epoch, on every
        rank: the same seed and epoch give the same order)."""
        self.epoch, self.skip_batches = epoch, 0
        self._world()

    def state_dict(self, batches: int = 0) -> dict[str, int]:
        """Where training stands: this epoch, and ``batches`` taken from it so far."""
        return {"epoch": self.epoch, "seed": self.seed, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next iteration gives epoch ``state["epoch"]`` from batch ``state["batches"]``
        on (items, without ``batch_size``), exactly the ones a full epoch would have given
        after those."""
        if state.get("seed", self.seed) != self.seed:
            raise ConfigError(f"the state was saved with seed {state['seed']}, this dataset has {self.seed}")
        self.epoch, self.skip_batches = int(state["epoch"]), int(state["batches"])
        self._world()

    def _worker(self) -> tuple[int, int]:
        """(this DataLoader worker's place in the turn, workers). The DataLoader takes a batch
        from each worker in turn starting with worker 0, so on a resume after ``b`` batches,
        worker 0 plays the part of the worker whose turn batch ``b`` was, and so on."""
        info = get_worker_info()
        if info is None:
            return 0, 1
        return (info.id + self.skip_batches) % info.num_workers, info.num_workers

    def _my_skip(self) -> int:
        """Of the batches already taken, how many were this worker's: the DataLoader takes one
        from each worker in turn."""
        worker, workers = self._worker()
        b = self.skip_batches
        return (b - worker + workers - 1) // workers if b > worker else 0

    # --- reading -----------------------------------------------------------------------------

    def _read(self, listed: Listed) -> bytes:
        """A file's bytes, checked; from ``cache_dir`` where an earlier epoch left them."""
        remote = "://" in listed.uri and not listed.uri.startswith("file://")
        if self.cache_dir is None or not remote or listed.sha256 is None:
            return read_verified(listed)
        path = os.path.join(self.cache_dir, f"{listed.sha256}.vz.parquet")
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() == listed.sha256:
                return data
            raise InputError(path, f"cached copy of {listed.uri}: {CHANGED}")
        data = read_verified(listed)
        os.makedirs(self.cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return data

    def _rows(self) -> Iterator[dict[str, Any]]:
        decoder = None
        if self.decode:
            assert self.checkpoint is not None
            device = torch.device(self.device)
            decoder = SampleDecoder(load_checkpoint(self.checkpoint, device), device)
        name = "sample" if decoder is not None else "latent"
        hyper: Hyper | None = None  # an rd hyperprior's codes need the checkpoint's scale network
        for group in _reads(self.pieces()):
            listed = self.listed[group[0].file]
            uri, data = listed.uri, self._read(listed)
            meta = read_footer(uri, data).meta  # the file's own footer
            if decoder is not None:
                check_model(meta, decoder.ckpt, uri)
            shift = _normalization(meta.model_config) if self.normalize and decoder is None else None
            if hyper is None and meta.codec.name == "learned" and self.checkpoint is not None:
                hyper = hyper_of((decoder.ckpt if decoder else load_checkpoint(self.checkpoint)).model)
            spans = {p.shape: (p.start, p.stop) for p in group}
            seen: dict[tuple[int, ...], int] = {}  # rows of each shape so far in this file
            for batch in iter_latents(uri, self.batch_rows, self.columns, meta=meta, data=data, hyper=hyper):
                if None in spans:  # one piece of consecutive rows
                    start, stop = spans[None]
                    if batch.start >= stop:
                        break
                    take = list(range(max(start - batch.start, 0), min(stop - batch.start, len(batch.keys))))
                else:  # rows of a shape, counted among themselves
                    take = []
                    for i, z in enumerate(batch.latents):
                        shape = tuple(np.shape(z))
                        k = seen[shape] = seen.get(shape, -1) + 1
                        span = spans.get(shape)
                        if span is not None and span[0] <= k < span[1]:
                            take.append(i)
                if not take:
                    continue
                if decoder is not None:  # only the rows taken through the decoder
                    part = replace(
                        batch,
                        start=batch.start + take[0],
                        keys=[batch.keys[i] for i in take],
                        latents=[batch.latents[i] for i in take],
                        layouts=[batch.layouts[i] for i in take],
                    )
                    values = decoder.samples(part)
                else:
                    values = [batch.latents[i] for i in take]
                for i, value in zip(take, values, strict=True):
                    if shift is not None:
                        value = ((value - shift[0]) / shift[1]).astype(np.float32)
                    item: dict[str, Any] = {"key": batch.keys[i], name: value}
                    item.update({c: v[i] for c, v in batch.columns.items()})
                    yield item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, _ = self._world()
        worker, _ = self._worker()
        rows = self._rows()
        if self.shuffle:
            rows = shuffled(
                rows, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, rank, worker])
            )
        items = self._batches(rows) if self.batch_size is not None else (self._typed(r) for r in rows)
        skip = self._my_skip()
        for i, item in enumerate(items):
            if i >= skip:
                yield item

    def _typed(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.dtype is not None and "latent" in item:
            item["latent"] = torch.from_numpy(np.ascontiguousarray(item["latent"])).to(self.dtype)
        return item

    def _batches(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_size`` rows of one shape, in the order their last row came."""
        assert self.batch_size is not None
        name = "sample" if self.decode else "latent"
        pending: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for row in rows:
            group = pending.setdefault(tuple(np.shape(row[name])), [])
            group.append(row)
            if len(group) == self.batch_size:
                yield self._stacked(group, name)
                group.clear()
        if self.remainder == "keep":
            for group in pending.values():
                if group:
                    yield self._stacked(group, name)

    def _stacked(self, rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
        values = np.stack([r[name] for r in rows])
        out: dict[str, Any] = {k: [r[k] for r in rows] for k in rows[0] if k != name}
        out[name] = values if self.dtype is None else torch.from_numpy(values).to(self.dtype)
        return out


def _shape_counts(files: list[str], readers: int = 16) -> list[dict[tuple[int, ...], int]] | None:
    """Each file's rows of each latent shape (one column read a file, in parallel); None for
    an archive of one shape, whose rows split evenly as they are."""
    with ThreadPoolExecutor(max_workers=max(1, min(readers, len(files)))) as pool:
        counts = list(pool.map(latent_shape_counts, files))
    return counts if len({s for c in counts for s in c}) > 1 else None


def _reads(pieces: list[Piece]) -> Iterator[list[Piece]]:
    """The pieces as reads: consecutive pieces of one file in one lap are read together."""
    group: list[Piece] = []
    for p in pieces:
        if group and (p.file, p.lap) != (group[0].file, group[0].lap):
            yield group
            group = []
        group.append(p)
    if group:
        yield group


def _normalization(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A diffusers VAE's ``latents_mean``/``latents_std`` in the archive's space ((z - shift)
    * scaling): (mean, std) per channel, shaped to broadcast over (C, H, W); None without."""
    auto = config.get("autoencoder") or {}
    mean, std = auto.get("latents_mean"), auto.get("latents_std")
    if config.get("kind") != "diffusers" or mean is None or std is None:
        return None
    sf, shift = float(config["scaling_factor"]), float(config.get("shift_factor") or 0.0)
    # (z - mean) * sf / std, from what the archive holds, (z - shift) * sf
    m = (np.asarray(mean, np.float32) - shift) * sf
    s = np.asarray(std, np.float32)
    return m[:, None, None], s[:, None, None]
