"""EncodeWorker: one shard in, one archive file out. A plain class; Ray makes it remote.

    read (prefetch thread: fsspec, image decode, to model arrays)
      -> group rows by shape -> encoder (inference_mode, on the worker's device) -> posterior mean
      -> quantize (job-wide params) -> layout -> crc32 -> Parquet row group (zstd column chunk)
      -> temporary name -> commit -> _done/<name>.json (written last)

Three threads: the prefetch thread reads, this thread runs the encoder, and a writer thread
quantizes, compresses and writes the previous batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import storage
from pipeline.codec import Codec, CodecConfig, CodecParams, row_bytes, train_dictionary
from pipeline.errors import InputError
from pipeline.format import ArchiveMeta, ArchiveWriter
from pipeline.models import config_to_dict
from pipeline.plan import Shard, done_uri
from pipeline.quantize import (
    QuantizerConfig,
    QuantizerParams,
    calibrate,
    quantize,
    stats_from_latents,
)
from pipeline.readers import Batch, ReadOptions, iter_batches
from pipeline.samples import SampleLayout, to_model
from pipeline.worker_common import HashingWriter, ModelWorker, ShardResult, failed, prefetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeSpec:
    checkpoint: str
    output: str
    read: ReadOptions = ReadOptions()
    device: str = "auto"
    threads: int | None = None
    key_column: str | None = None


@dataclass(frozen=True)
class JobParams:
    quantizer: QuantizerParams
    codec: CodecParams
    job_fingerprint: str
    input_uri: str


@dataclass(frozen=True)
class Encoded:
    """One batch after the encoder: rows in source order."""

    batch: Batch
    keys: list[str]
    layouts: list[SampleLayout]
    latent_shapes: list[tuple[int, ...]]
    means: list[np.ndarray]        # per row, (C, P)
    logvars: list[np.ndarray]


def _payloads(means: list[np.ndarray], qparams: QuantizerParams,
              codec: Codec) -> tuple[list[bytes], list[int], int]:
    """Per-row (C, P) latents -> ``vz_codes`` payloads, checksums, and the clipped count;
    rows of one shape are quantized together."""
    payloads: list[bytes] = [b""] * len(means)
    crcs = [0] * len(means)
    clipped = 0
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(means):
        groups.setdefault(m.shape, []).append(i)
    for idx in groups.values():
        codes, n = quantize(np.stack([means[i] for i in idx]), qparams)
        clipped += n
        group_payloads, group_crcs = codec.encode(codes)
        for j, i in enumerate(idx):
            payloads[i], crcs[i] = group_payloads[j], group_crcs[j]
    return payloads, crcs, clipped


def check_new_keys(shard: Shard, enc: Encoded, seen: set[str]) -> None:
    """Refuse a key already seen in this shard, naming its file and row; remember the rest."""
    for key, r in zip(enc.keys, enc.batch.rows, strict=True):
        if key in seen:
            uri, row = _where(shard, r)
            raise InputError(uri, f"duplicate key {key!r}", row=row)
        seen.add(key)


def _where(shard: Shard, row: int) -> tuple[str, int | None]:
    """The file and row an error should name: an image group's file has no rows."""
    return (shard.members[row], None) if shard.members else (shard.source, row)


class EncodeWorker(ModelWorker):
    def __init__(self, spec: EncodeSpec) -> None:
        super().__init__(spec.checkpoint, spec.device, spec.threads)
        self.spec = spec

    # -- reading and the model ------------------------------------------------------------

    def _prepared(self, shard: Shard) -> Iterator[tuple[Batch, list[np.ndarray], list[SampleLayout]]]:
        for batch in iter_batches(shard.source, self.spec.read, shard.members):
            pairs = [to_model(s, self.ckpt.config, *_where(shard, r))
                     for r, s in zip(batch.rows, batch.samples, strict=True)]
            yield batch, [p[0] for p in pairs], [p[1] for p in pairs]

    def _keys(self, shard: Shard, batch: Batch) -> list[str]:
        col = self.spec.key_column
        if col is None:
            return batch.ids or [f"{shard.relpath}:{r}" for r in batch.rows]
        if col not in batch.columns:
            raise InputError(shard.source, f"missing key column {col!r}")
        return [str(v) for v in batch.columns[col]]

    @torch.inference_mode()
    def _encode(self, shard: Shard) -> Iterator[Encoded]:
        for batch, arrays, layouts in prefetch(lambda: self._prepared(shard)):
            means: list[np.ndarray] = [np.empty(0)] * len(arrays)
            logvars: list[np.ndarray] = [np.empty(0)] * len(arrays)
            shapes: list[tuple[int, ...]] = [()] * len(arrays)
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, a in enumerate(arrays):
                groups.setdefault(a.shape, []).append(i)
            for idx in groups.values():
                x = torch.from_numpy(np.stack([arrays[i] for i in idx])).to(self.device)
                t = time.perf_counter()
                post = self.model.encode(x)
                m = post.mean.float().cpu().numpy()
                lv = post.logvar.float().cpu().numpy()
                self.model_seconds += time.perf_counter() - t
                lshape = tuple(m.shape[1:])
                for j, i in enumerate(idx):
                    means[i] = m[j].reshape(lshape[0], -1)
                    logvars[i] = lv[j].reshape(lshape[0], -1)
                    shapes[i] = lshape
            yield Encoded(batch, self._keys(shard, batch), layouts, shapes, means, logvars)

    # -- calibration ----------------------------------------------------------------------

    def calibrate(self, shards: list[Shard], max_rows: int, qconfig: QuantizerConfig,
                  cconfig: CodecConfig) -> tuple[QuantizerParams, CodecParams]:
        """Quantizer and codec parameters from the first ``max_rows`` rows of ``shards``."""
        means, logvars = [], []
        errors = []
        for shard in shards:
            try:
                for enc in self._encode(shard):
                    means += [m.T for m in enc.means]      # (P, C): positions pool across rows
                    logvars += [v.T for v in enc.logvars]
                    if len(means) >= max_rows:
                        break
            except InputError as err:   # a bad shard fails on its own later, not the job
                log.warning("calibration skips shard %s: %s", shard.name, err)
                errors.append(err)
            if len(means) >= max_rows:
                break
        if not means:
            raise InputError(shards[0].source if shards else "?", "no shard could be read to "
                             f"calibrate the quantizer; first error: {errors[0] if errors else '-'}")
        m = np.concatenate(means)[:, :, None]        # (sum P, C, 1)
        lv = np.concatenate(logvars)[:, :, None]
        qparams = calibrate(stats_from_latents(m, lv), qconfig)
        samples = []
        if cconfig.framing == "row" and cconfig.dictionary:
            for a in means[:max_rows]:
                codes, _ = quantize(np.ascontiguousarray(a.T)[None], qparams)
                samples += row_bytes(codes, cconfig.layout)
        cparams = CodecParams(level=cconfig.level, layout=cconfig.layout, framing=cconfig.framing,
                              dictionary=train_dictionary(samples, cconfig))
        log.info("calibrated on %d rows: %d of %d channels active, dictionary %d bytes",
                 len(means), sum(qparams.active), qparams.channels, len(cparams.dictionary))
        return qparams, cparams

    # -- one shard ------------------------------------------------------------------------

    @staticmethod
    def _write(writer: ArchiveWriter, shard: Shard, enc: Encoded, job: JobParams, codec: Codec,
               seen: set[str]) -> int:
        """Quantize, checksum, compress and write one encoded batch (the writer thread, one
        batch behind the encoder); returns the number of clipped values."""
        check_new_keys(shard, enc, seen)
        frames, crcs, clipped = _payloads(enc.means, job.quantizer, codec)
        writer.write({
            "vz_key": enc.keys, "vz_codes": frames, "vz_crc32": crcs,
            "vz_shape": [list(lay.shape) for lay in enc.layouts],
            "vz_dtype": [lay.dtype for lay in enc.layouts],
            "vz_latent_shape": [list(s) for s in enc.latent_shapes],
        }, enc.batch.columns)
        return clipped

    def process(self, shard: Shard, job: JobParams) -> ShardResult:
        start = time.perf_counter()
        out_uri = storage.join(self.spec.output, shard.name)
        meta = ArchiveMeta(model_fingerprint=self.ckpt.fingerprint,
                           model_config=config_to_dict(self.ckpt.config), quantizer=job.quantizer,
                           codec=job.codec, source_uri=shard.source,
                           job_fingerprint=job.job_fingerprint)
        codec = Codec(job.codec)
        rows = clipped = 0
        self.model_seconds = 0.0
        try:
            with storage.atomic_write(out_uri) as raw:
                f = HashingWriter(raw)
                writer = ArchiveWriter(f, meta, out_uri)
                seen: set[str] = set()
                with ThreadPoolExecutor(1, thread_name_prefix="vaezip-write") as pool:
                    pending: Future | None = None
                    for enc in self._encode(shard):
                        if pending is not None:
                            clipped += pending.result()   # one batch in flight; errors here
                        pending = pool.submit(self._write, writer, shard, enc, job, codec, seen)
                        rows += len(enc.batch)
                    if pending is not None:
                        clipped += pending.result()
                if rows == 0:
                    raise InputError(shard.source, "shard holds no rows")
                writer.close()
        except InputError as err:
            return failed(shard.name, shard.source, err, start)
        seconds = time.perf_counter() - start
        record = {"job_fingerprint": job.job_fingerprint, "name": shard.name,
                  "source": shard.source, "rows": rows, "bytes": f.bytes,
                  "sha256": f.sha256.hexdigest(), "input_bytes": shard.input_bytes(),
                  "clipped": clipped, "seconds": round(seconds, 3)}
        storage.write_bytes(done_uri(self.spec.output, shard.name), json.dumps(record).encode())
        log.info("shard %s: %d rows, %d bytes, %.2f s", shard.name, rows, f.bytes, seconds)
        return ShardResult(shard.name, shard.source, ok=True, rows=rows,
                           input_bytes=record["input_bytes"], output_bytes=f.bytes,
                           clipped=clipped, seconds=seconds, model_seconds=self.model_seconds)
