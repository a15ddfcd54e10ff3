"""DecodeWorker: one archive file in, reconstructions out. The mirror image of EncodeWorker.

    Parquet row groups -> check metadata (version, model fingerprint) -> codes -> crc32 check
      -> codes -> dequantize -> group rows by shape -> decoder (inference_mode) -> crop
      -> source shape and dtype -> writer (.npy, Parquet with PNG bytes) -> commit -> _done

Three threads: the prefetch thread reads and dequantizes, this thread runs the decoder, and
a writer thread restores and writes the previous batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import storage
from pipeline.codec import Codec, checksum, rows_to_codes
from pipeline.errors import InputError
from pipeline.format import BASE_NAMES, ArchiveMeta, num_rows, read_meta
from pipeline.outputs import OUTPUT_FORMATS, Writer, open_output
from pipeline.plan import Shard, done_uri
from pipeline.quantize import dequantize
from pipeline.samples import SUPPORTED_DTYPES, SampleLayout
from pipeline.worker_common import HashingWriter, ModelWorker, ShardResult, prefetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSpec:
    checkpoint: str
    output: str
    output_format: str = "npy"
    batch_rows: int = 256
    device: str = "auto"
    threads: int | None = None
    job_fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(self.output, f"output format must be one of {OUTPUT_FORMATS}")


@dataclass(frozen=True)
class DecodedBatch:
    keys: list[str]
    samples: list[np.ndarray]
    columns: dict[str, list]


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


class DecodeWorker(ModelWorker):
    def __init__(self, spec: DecodeSpec) -> None:
        super().__init__(spec.checkpoint, spec.device, spec.threads)
        self.spec = spec

    @torch.inference_mode()
    def _run_model(self, latents: list[np.ndarray], layouts: list[SampleLayout]
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
    def _restore(outputs: list[tuple[list[int], np.ndarray]], layouts: list[SampleLayout],
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

    def batches(self, uri: str) -> Iterator[DecodedBatch]:
        """Decoded rows of one archive file; reading, checksums and dequantizing run in a
        prefetch thread, so they overlap the decoder."""
        for start, keys, latents, layouts, columns in prefetch(lambda: self._host_side(uri)):
            outputs = self._run_model(latents, layouts)
            yield DecodedBatch(keys, self._restore(outputs, layouts, uri, start), columns)

    def _host_side(self, uri: str) -> Iterator[tuple]:
        meta = read_meta(uri)
        if meta.model_fingerprint != self.ckpt.fingerprint:
            raise InputError(uri, f"archive was written with model {meta.model_fingerprint[:12]}..., "
                                  f"the checkpoint is {self.ckpt.fingerprint[:12]}...; "
                                  "decode with the checkpoint that encoded it")
        codec = Codec(meta.codec)
        with storage.open_read(uri) as f:
            start = 0
            try:
                pf = pq.ParquetFile(f, page_checksum_verification=True)
                missing = set(BASE_NAMES) - set(pf.schema_arrow.names)
                if missing:
                    raise InputError(uri, f"not a vaezip archive: no columns {sorted(missing)}")
                for rb in pf.iter_batches(batch_size=self.spec.batch_rows):
                    cols = rb.to_pydict()
                    yield (start, cols["vz_key"], *self._dequantized(meta, codec, uri, start, cols),
                           {k: v for k, v in cols.items() if k not in BASE_NAMES})
                    start += rb.num_rows
            except (pa.ArrowInvalid, OSError) as err:
                raise InputError(uri, f"corrupt Parquet data ({err})", row=start) from err

    @staticmethod
    def _dequantized(meta: ArchiveMeta, codec: Codec, uri: str, start: int,
                     cols: dict[str, list]) -> tuple[list[np.ndarray], list[SampleLayout]]:
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

    def _decode_into(self, writer: Writer, uri: str) -> int:
        """Read (prefetch thread) -> decoder (this thread) -> restore and write (a writer
        thread, one batch behind), so the decoder is the only stage the others wait on."""
        rows = 0
        with ThreadPoolExecutor(1, thread_name_prefix="vaezip-write") as pool:
            pending: Future | None = None
            for start, keys, latents, layouts, columns in prefetch(lambda: self._host_side(uri)):
                outputs = self._run_model(latents, layouts)
                if pending is not None:
                    pending.result()             # one batch in flight; its errors surface here
                pending = pool.submit(self._write, writer, uri, start, keys, outputs, layouts,
                                      columns)
                rows += len(keys)
            if pending is not None:
                pending.result()
        return rows

    def _write(self, writer: Writer, uri: str, start: int, keys: list[str],
               outputs: list[tuple[list[int], np.ndarray]], layouts: list[SampleLayout],
               columns: dict[str, list]) -> None:
        writer.write(keys, self._restore(outputs, layouts, uri, start), columns)

    def process(self, shard: Shard) -> ShardResult:
        start = time.perf_counter()
        rows = 0
        try:
            rows_total = num_rows(shard.source)
            out_uri = storage.join(self.spec.output, shard.name)
            with storage.atomic_write(out_uri) as raw:
                f = HashingWriter(raw)
                with open_output(self.spec.output_format, f, out_uri, rows_total) as writer:
                    rows = self._decode_into(writer, shard.source)
        except InputError as err:
            log.warning("shard %s failed: %s", shard.name, err)
            return ShardResult(shard.name, shard.source, ok=False, error=str(err),
                               seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        record = {"job_fingerprint": self.spec.job_fingerprint, "name": shard.name,
                  "source": shard.source, "rows": rows, "bytes": f.bytes,
                  "sha256": f.sha256.hexdigest(), "seconds": round(seconds, 3)}
        storage.write_bytes(done_uri(self.spec.output, shard.name), json.dumps(record).encode())
        return ShardResult(shard.name, shard.source, ok=True, rows=rows,
                           input_bytes=storage.size(shard.source), output_bytes=f.bytes,
                           seconds=seconds)
