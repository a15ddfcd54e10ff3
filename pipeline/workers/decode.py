"""DecodeWorker: one archive file in, reconstructions out. The mirror image of EncodeWorker.

the archive file read once (one GET on an object store; its footer, keys, rows and sha256 all
  come from those bytes: codes are small beside what they decode to)
-> footer (version, model fingerprint) -> prefetch thread: iter_latents (page and row
  checksums, dequantize) -> this thread: decoder (inference_mode) -> writer thread, one
  batch behind: crop, source shape and dtype -> output writer (.npy, Parquet with PNG
  bytes, images, WebDataset) -> run_shard: commit -> _done/<name>.json (written last)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.codec.format import read_footer, read_keys
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.core.overlap import one_behind, prefetch
from pipeline.data.archive import LatentBatch, SampleDecoder, check_model, iter_latents
from pipeline.data.outputs import OUTPUT_FORMATS, open_output
from pipeline.data.rd_rows import hyper_of
from pipeline.data.tiles import Reassembled, by_image, context_windows, images_in
from pipeline.ledger.completion import ShardResult, Written, failed, run_shard
from pipeline.ledger.integrity import CHANGED
from pipeline.ledger.shard import MISSING, Shard
from pipeline.model.reach import tile_reach
from pipeline.workers.model_worker import ModelWorker

log = logging.getLogger(__name__)
Decoded = tuple[LatentBatch, list[tuple[list[int], np.ndarray]]]


@dataclass(frozen=True)
class DecodeSpec:
    checkpoint: str
    output: str
    output_format: str = "npy"
    batch_rows: int = 256
    device: str = "auto"
    threads: int | None = None
    job_fingerprint: str = ""
    precision: str = "auto"  # pipeline.model.precision
    host_workers: int | None = None  # None: the CPUs Ray gave the actor
    host_pool: str = "processes"  # pipeline.core.hostpool: what encodes the image files

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(self.output, f"output format must be one of {OUTPUT_FORMATS}")


class DecodeWorker(ModelWorker):
    def __init__(self, spec: DecodeSpec) -> None:
        super().__init__(
            spec.checkpoint, spec.device, spec.threads, spec.precision, spec.host_workers, spec.host_pool
        )
        self.spec = spec
        self.decoder = SampleDecoder(self.ckpt, self.device, self.dtype)
        self._reach: dict[int, int | None] = {}
        self._hyper = hyper_of(self.ckpt.model)  # codec "learned" of an rd hyperprior needs it

    def _decoded(self, batches: Iterator[LatentBatch]) -> Iterator[Decoded]:
        for batch in batches:
            with self.clock.timing():
                outputs = self.decoder.run_model(batch.latents, batch.layouts, batch.quantizer)
            yield batch, outputs

    def _decoded_in_context(self, images: Iterator[LatentBatch], reach: int) -> Iterator[Decoded]:
        """One image's tiles at a time, each decoded with ``reach`` cells of its neighbours."""
        factor = self.ckpt.config.downsample_factor  # type: ignore[union-attr]
        for image in images:
            windows = context_windows(image, factor, reach)
            with self.clock.timing():
                if windows is None:  # tiles off the latent grid (a size not a multiple of f)
                    outputs = self.decoder.run_model(image.latents, image.layouts)
                else:
                    outputs = self.decoder.run_windows(windows, image.layouts)
            yield image, outputs

    def tile_reach(self, tile: int) -> int | None:
        """``pipeline.model.reach.tile_reach``, measured once per tile size."""
        if tile not in self._reach:
            self._reach[tile] = tile_reach(self.ckpt.model, tile)
        return self._reach[tile]

    def process(self, shard: Shard) -> ShardResult:
        listed = shard.listed
        # Unrecorded: refused at once; missing: when the read finds it so (no request before it).
        # A wrong size is left to the sha256 check at the end, so a damaged file first reports
        # what is damaged in it (row, page, footer).
        problem = listed.unlisted() if listed is not None else None
        if problem is not None:
            return failed(shard.name, shard.source, InputError(shard.source, problem), time.perf_counter())

        def body(f: storage.HashingWriter, uri: str) -> Written:
            # the archive file is read once: footer, keys and rows all come from these bytes,
            # and its sha256 is taken of them
            try:
                data = storage.read_bytes(shard.source, listed.bytes if listed is not None else None)
            except FileNotFoundError as err:
                raise InputError(
                    shard.source, MISSING if listed is not None else "archive file not found"
                ) from err
            footer = read_footer(shard.source, data)
            meta, rows_total = footer.meta, footer.rows
            check_model(meta, self.ckpt, shard.source)
            recorded = listed.sha256 if listed is not None else None

            def check_hash() -> None:
                if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
                    raise InputError(shard.source, CHANGED)

            if meta.codec.name in ("rans", "learned"):  # trusted before its tables are built
                check_hash()
            reach = self.tile_reach(meta.tile) if meta.tile else None
            latents = prefetch(
                lambda: iter_latents(  # on a CPU the reader thread dequantizes, beside the model
                    shard.source,
                    self.spec.batch_rows,
                    meta=meta,
                    data=data,
                    on_device=self.device.type != "cpu" and reach is None,  # tiles: dequantized for the grid
                    hyper=self._hyper,
                )
            )
            if reach is None:
                decoded = self._decoded(latents)
            else:
                decoded = self._decoded_in_context(by_image(latents), reach)
            if meta.tile:  # whole images are written: as many as the tiles make up
                rows_total = images_in(read_keys(shard.source, data))
            output = open_output(
                self.spec.output_format,
                f,
                uri,
                rows_total,
                footer.features,
                self.host_workers,
                self.host_pool,
            )
            with Reassembled(output, shard.source) if meta.tile else output as writer:

                def write(item: Decoded) -> int:
                    batch, outputs = item
                    samples = SampleDecoder.restore(outputs, batch.layouts, batch.uri, batch.start)
                    writer.write(batch.keys, samples, batch.columns)
                    return len(batch.keys)

                rows = sum(one_behind(decoded, write))
                # Every row was checked on the way; now the whole file against its record, which
                # also covers what no row checksum does (before the writer finishes anything).
                if listed is not None and listed.sha256 is not None:
                    if rows != listed.rows:
                        raise InputError(
                            shard.source, f"{rows} rows, the archive's record says {listed.rows}"
                        )
                    if meta.codec.name != "rans":  # checked before its model was built
                        check_hash()
            return Written(rows=rows, extra_bytes=writer.extra_bytes)

        return run_shard(self.spec.output, shard, shard.name, self.spec.job_fingerprint, body, self.clock)
