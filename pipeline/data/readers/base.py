"""What a reader hands out: a batch of raw samples from one source file, in row order.

Samples stay in their source dtype and shape (``uint8`` HxWxC images, float vectors, ...);
``pipeline.data.samples`` converts them for the model and back, so a decode can restore exactly
what came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.errors import InputError


@dataclass(frozen=True)
class Batch:
    source: str  # URI of the file the rows came from
    start_row: int  # index of the first row within that file
    samples: list[np.ndarray]  # one array per row, source dtype and shape
    columns: dict[str, list[Any]] = field(default_factory=dict)  # passthrough, per row
    ids: list[str] | None = None  # the source's own id per row, where it has one
    # Hugging Face ``datasets`` features of passthrough columns, where the source records them
    features: dict[str, Any] | None = None
    # the source row of each sample where they are not consecutive rows (tiles of images)
    source_rows: list[int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def rows(self) -> range | list[int]:
        if self.source_rows is not None:
            return self.source_rows
        return range(self.start_row, self.start_row + len(self.samples))


# What one sample may claim before anything is allocated for it. A 45-byte PNG can declare
# 50000x50000 pixels, a 10 KB sparse tar member 16 GB: limits are checked against the
# headers, so a worker's memory stays bounded whatever the input claims.
DEFAULT_MAX_PIXELS = 1 << 22  # 4.2 million pixels (2048 x 2048): a demo conv VAE's activations
DEFAULT_MAX_MEMBER_BYTES = 256 << 20  # one WebDataset member


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    @property
    def max_values(self) -> int:
        """What an array sample may hold: ``max_pixels`` pixels of up to 4 channels."""
        return 4 * self.max_pixels

    def check_values(self, shape: tuple[int, ...], uri: str, row: int | None = None) -> None:
        """Refuse, from a header's shape and before anything is allocated, an array sample of
        more values than ``max_values`` (a 236-byte .npy can declare 600000x600000x3)."""
        n = 1
        for d in shape:
            n *= int(d)
        if n > self.max_values:
            raise InputError(
                uri,
                f"a sample of shape {tuple(int(d) for d in shape)} holds {n:,} values, more than "
                f"--max-pixels {self.max_pixels:,} (pixels of up to 4 channels) allows",
                row=row,
            )
