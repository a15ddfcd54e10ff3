"""Reading archives back: files, batches of dequantized latents, and the decoder that turns
latents into samples. The decode job, the PyTorch dataset, the Ray Data path and ``inspect``
all read through here.

    archive_files(uri)                -> the archive's .vz.parquet files, sorted
    iter_latents(file)                -> LatentBatch: keys, dequantized latents, sample layouts,
                                         passthrough columns (every crc and field checked)
    SampleDecoder(ckpt).samples(...)  -> samples in their source's shape and dtype
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import storage
from pipeline.checkpoint import Checkpoint
from pipeline.codec import Codec, checksum, rows_to_codes
from pipeline.errors import InputError
from pipeline.format import BASE_NAMES, ArchiveMeta, read_meta
from pipeline.plan import SUFFIX
from pipeline.quantize import dequantize
from pipeline.samples import SUPPORTED_DTYPES, SampleLayout


@dataclass(frozen=True)
class LatentBatch:
    """Consecutive rows of one archive file, from row ``start``."""

    uri: str
    start: int
    keys: list[str]
    latents: list[np.ndarray]      # per row, dequantized, shaped as vz_latent_shape
    layouts: list[SampleLayout]    # per row, the source sample's shape and dtype
    columns: dict[str, list]       # passthrough columns


def archive_files(uri: str) -> list[str]:
    """An archive folder, glob or single file -> its ``.vz.parquet`` files, sorted."""
    try:
        files = storage.expand(uri, (SUFFIX,))
    except FileNotFoundError as err:
        raise InputError(uri, "no such archive") from err
    if not files:
        raise InputError(uri, f"no archive files (*{SUFFIX}) found")
    return files


def decode_codes(meta: ArchiveMeta, codec: Codec, uri: str, start: int, payloads: list[bytes],
                 crcs: list[int], latent_shapes: list[list[int]]) -> list[np.ndarray]:
    """``vz_codes`` payloads -> per-row dequantized latents of shape ``latent_shape``; checks
    every row's crc and length, then dequantizes rows of one shape together."""
    q = meta.quantizer
    active = sum(q.active)
    groups: dict[tuple[int, ...], list[int]] = {}
    raws: list[bytes] = []
    for i, (payload, crc, lshape) in enumerate(zip(payloads, crcs, latent_shapes, strict=True)):
        try:
            data = codec.raw(payload)
        except Exception as err:  # zstd raises its own error type for corrupt frames
            raise InputError(uri, f"codes do not decompress ({err})", row=start + i) from err
        if checksum(data) != crc:
            raise InputError(uri, "checksum mismatch: the codes are corrupt", row=start + i)
        if not lshape or lshape[0] != q.channels:
            raise InputError(uri, f"latent shape {lshape} does not fit the quantizer's "
                                  f"{q.channels} channels", row=start + i)
        positions = int(np.prod(lshape[1:], dtype=np.int64)) if len(lshape) > 1 else 1
        if len(data) != active * positions * q.dtype.itemsize:
            raise InputError(uri, "code length does not fit the latent shape", row=start + i)
        raws.append(data)
        groups.setdefault(tuple(lshape), []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(raws)
    for lshape, idx in groups.items():
        positions = int(np.prod(lshape[1:], dtype=np.int64)) if len(lshape) > 1 else 1
        codes = rows_to_codes([raws[i] for i in idx], (active, positions), q.dtype,
                              codec.params.layout)
        latents = dequantize(codes, q).reshape(len(idx), *lshape)
        for j, i in enumerate(idx):
            out[i] = latents[j]
    return out


def latents_of(meta: ArchiveMeta, codec: Codec, uri: str, start: int,
               cols: dict[str, list]) -> tuple[list[np.ndarray], list[SampleLayout]]:
    """A batch of archive columns (as Python lists) -> dequantized latents and layouts."""
    latents = decode_codes(meta, codec, uri, start, cols["vz_codes"], cols["vz_crc32"],
                           cols["vz_latent_shape"])
    try:
        layouts = [SampleLayout(tuple(int(v) for v in s), str(d))
                   for s, d in zip(cols["vz_shape"], cols["vz_dtype"], strict=True)]
    except (TypeError, ValueError) as err:
        raise InputError(uri, f"bad sample shape or dtype ({err})", row=start) from err
    for i, lay in enumerate(layouts):
        if lay.dtype not in SUPPORTED_DTYPES:
            raise InputError(uri, f"unknown sample dtype {lay.dtype!r}", row=start + i)
    return latents, layouts


def iter_latents(uri: str, batch_rows: int = 256, columns: list[str] | None = None,
                 meta: ArchiveMeta | None = None) -> Iterator[LatentBatch]:
    """One archive file as batches of dequantized latents, in row order. ``columns`` limits
    the passthrough columns read (default: all)."""
    meta = meta or read_meta(uri)
    codec = Codec(meta.codec)
    with storage.open_read(uri) as f:
        start = 0
        try:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            names = pf.schema_arrow.names
            missing = set(BASE_NAMES) - set(names)
            if missing:
                raise InputError(uri, f"not a vaezip archive: no columns {sorted(missing)}")
            wanted = [n for n in names if n not in BASE_NAMES and (columns is None or n in columns)]
            unknown = set(columns or ()) - set(names)
            if unknown:
                raise InputError(uri, f"no such passthrough columns {sorted(unknown)}")
            for rb in pf.iter_batches(batch_size=batch_rows, columns=BASE_NAMES + wanted):
                cols = rb.to_pydict()
                latents, layouts = latents_of(meta, codec, uri, start, cols)
                yield LatentBatch(uri, start, cols["vz_key"], latents, layouts,
                                  {k: cols[k] for k in wanted})
                start += rb.num_rows
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"corrupt Parquet data ({err})", row=start) from err


class SampleDecoder:
    """The checkpoint's decoder over latents from an archive, on one device."""

    def __init__(self, ckpt: Checkpoint, device: torch.device) -> None:
        self.ckpt, self.device = ckpt, device
        self.model = ckpt.model.to(device).eval()

    @torch.inference_mode()
    def run_model(self, latents: list[np.ndarray], layouts: list[SampleLayout]
                  ) -> list[tuple[list[int], np.ndarray]]:
        """Rows grouped by latent and sample shape -> the decoder's (N, ...) output per group."""
        groups: dict[tuple, list[int]] = {}
        for i, (z, lay) in enumerate(zip(latents, layouts, strict=True)):
            groups.setdefault((z.shape, lay.shape), []).append(i)
        out = []
        for (_, sample_shape), idx in groups.items():
            z = torch.from_numpy(np.stack([latents[i] for i in idx])).to(self.device)
            size = None if self.ckpt.config.kind == "mlp" else tuple(sample_shape[:2])
            out.append((idx, self.model.decode(z, size).float().clamp(0.0, 1.0).cpu().numpy()))
        return out

    @staticmethod
    def restore(outputs: list[tuple[list[int], np.ndarray]], layouts: list[SampleLayout],
                uri: str, start: int) -> list[np.ndarray]:
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
                    raise InputError(uri, f"stored shape {lay.shape} does not fit the decoder's "
                                          f"output {x.shape[1:]}", row=start + idx[js[0]]) from err
                for j, r in zip(js, restored, strict=True):
                    rows[idx[j]] = r
        return rows

    def samples(self, batch: LatentBatch) -> list[np.ndarray]:
        return self.restore(self.run_model(batch.latents, batch.layouts), batch.layouts,
                            batch.uri, batch.start)


def check_model(meta: ArchiveMeta, ckpt: Checkpoint, uri: str) -> None:
    if meta.model_fingerprint != ckpt.fingerprint:
        raise InputError(uri, f"archive was written with model {meta.model_fingerprint[:12]}..., "
                              f"the checkpoint is {ckpt.fingerprint[:12]}...; "
                              "decode with the checkpoint that encoded it")
