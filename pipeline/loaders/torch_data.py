"""A PyTorch ``IterableDataset`` over an archive: stream latents (or decoded samples) straight
into training, with nothing but the archive and, for samples, the checkpoint.

    ds = ArchiveDataset("s3://latents/run1")                       # dequantized latents
    ds = ArchiveDataset("archive/", checkpoint="ckpt/", decode=True)   # decoded samples
    for item in DataLoader(ds, batch_size=None, num_workers=4): ...

Files are split across distributed ranks first (``torch.distributed`` when it is initialized,
else ``rank``/``world_size``), then across DataLoader workers: every file goes to exactly one
(rank, worker), whole, so nothing is read twice. Items are dicts: ``key``, ``latent`` (float32,
the archive's latent shape) or ``sample`` (the source's shape and dtype), and every
passthrough column (labels, captions, ids).

What decode checks, this checks: every file the manifest (or the completion records) lists
must be there; each file is read once, its size and sha256 checked against its record before
any of its rows is handed out, and its own footer gives its quantizer and codec. A file that
fails raises ``InputError`` naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.codec.format import read_footer
from pipeline.core.errors import ConfigError
from pipeline.data.archive import SampleDecoder, check_model, iter_latents
from pipeline.ledger.integrity import listed_files, read_verified
from pipeline.ledger.shard import Listed
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
    ) -> None:
        if decode and checkpoint is None:
            raise ConfigError("decode=True needs the checkpoint that encoded the archive")
        self.listed = listed_files(archive)
        self.files = [f.uri for f in self.listed]
        self.checkpoint, self.decode, self.columns = checkpoint, decode, columns
        self.batch_rows, self.device = batch_rows, device
        self.rank, self.world_size = rank, world_size

    def my_files(self) -> list[Listed]:
        """The files this rank and DataLoader worker read."""
        rank, world = _distributed()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.listed[rank * workers + worker :: world * workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        decoder = None
        if self.decode:
            assert self.checkpoint is not None
            device = torch.device(self.device)
            decoder = SampleDecoder(load_checkpoint(self.checkpoint, device), device)
        for listed in self.my_files():
            uri, data = listed.uri, read_verified(listed)
            meta = read_footer(uri, data).meta  # the file's own footer
            if decoder is not None:
                check_model(meta, decoder.ckpt, uri)
            for batch in iter_latents(uri, self.batch_rows, self.columns, meta=meta, data=data):
                values = decoder.samples(batch) if decoder is not None else batch.latents
                name = "sample" if decoder is not None else "latent"
                for i, key in enumerate(batch.keys):
                    item: dict[str, Any] = {"key": key, name: values[i]}
                    item.update({c: v[i] for c, v in batch.columns.items()})
                    yield item
