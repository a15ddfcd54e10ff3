"""One rank of the DDP reader tests (tests/test_downstream.py): torch.distributed over gloo, a
DataLoader with two workers, the keys (and latent shape) of every batch of two epochs written
out as JSON."""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from pipeline.loaders.torch_data import ArchiveDataset


def run(rank: int, world: int, archive: str, store: str, out: str, batch_size: int = 16) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds = ArchiveDataset(
            archive,
            shuffle=True,
            seed=7,
            batch_size=batch_size,
            remainder="drop",
            num_workers=2,
            dtype=torch.bfloat16,
            columns=[],
        )
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        epochs = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            batches = []
            for batch in loader:
                assert batch["latent"].dtype == torch.bfloat16 and batch["latent"].shape[0] == batch_size
                batches.append({"keys": batch["key"], "shape": list(batch["latent"].shape[1:])})
            epochs.append(batches)
        # every rank has as many batches: the same all_reduce count on both
        count = torch.tensor([len(epochs[0])])
        dist.all_reduce(count)
        ds.load_state_dict({"epoch": 1, "seed": 7, "batches": 5})
        resumed = [{"keys": b["key"], "shape": list(b["latent"].shape[1:])} for b in loader]
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"epochs": epochs, "resumed": resumed, "len": len(ds), "sum": int(count)}, f)
    finally:
        dist.destroy_process_group()
