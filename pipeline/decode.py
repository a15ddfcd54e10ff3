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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline import storage
from pipeline.archive import LatentBatch, SampleDecoder, check_model, iter_latents
from pipeline.errors import InputError
from pipeline.format import ArchiveMeta, read_meta_and_rows
from pipeline.outputs import OUTPUT_FORMATS, Writer, open_output
from pipeline.plan import Shard, done_uri
from pipeline.worker_common import HashingWriter, ModelWorker, ShardResult, failed, prefetch

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


class DecodeWorker(ModelWorker):
    def __init__(self, spec: DecodeSpec) -> None:
        super().__init__(spec.checkpoint, spec.device, spec.threads)
        self.spec = spec
        self.decoder = SampleDecoder(self.ckpt, self.device)

    def _decode_into(self, writer: Writer, uri: str, meta: ArchiveMeta) -> int:
        """Read (prefetch thread) -> decoder (this thread) -> restore and write (a writer
        thread, one batch behind), so the decoder is the only stage the others wait on."""
        rows = 0
        with ThreadPoolExecutor(1, thread_name_prefix="vaezip-write") as pool:
            pending: Future | None = None
            for batch in prefetch(lambda: iter_latents(uri, self.spec.batch_rows, meta=meta)):
                t = time.perf_counter()
                outputs = self.decoder.run_model(batch.latents, batch.layouts)
                self.model_seconds += time.perf_counter() - t
                if pending is not None:
                    pending.result()             # one batch in flight; its errors surface here
                pending = pool.submit(self._write, writer, batch, outputs)
                rows += len(batch.keys)
            if pending is not None:
                pending.result()
        return rows

    @staticmethod
    def _write(writer: Writer, batch: LatentBatch,
               outputs: list[tuple[list[int], np.ndarray]]) -> None:
        writer.write(batch.keys, SampleDecoder.restore(outputs, batch.layouts, batch.uri,
                                                       batch.start), batch.columns)

    def process(self, shard: Shard) -> ShardResult:
        start = time.perf_counter()
        rows = 0
        self.model_seconds = 0.0
        try:
            meta, rows_total = read_meta_and_rows(shard.source)
            check_model(meta, self.ckpt, shard.source)
            out_uri = storage.join(self.spec.output, shard.name)
            with storage.atomic_write(out_uri) as raw:
                f = HashingWriter(raw)
                with open_output(self.spec.output_format, f, out_uri, rows_total) as writer:
                    rows = self._decode_into(writer, shard.source, meta)
        except InputError as err:
            return failed(shard.name, shard.source, err, start)
        seconds = time.perf_counter() - start
        record = {"job_fingerprint": self.spec.job_fingerprint, "name": shard.name,
                  "source": shard.source, "rows": rows, "bytes": f.bytes,
                  "sha256": f.sha256.hexdigest(), "seconds": round(seconds, 3)}
        storage.write_bytes(done_uri(self.spec.output, shard.name), json.dumps(record).encode())
        log.info("shard %s: %d rows, %d bytes, %.2f s", shard.name, rows, f.bytes, seconds)
        return ShardResult(shard.name, shard.source, ok=True, rows=rows,
                           input_bytes=storage.size(shard.source), output_bytes=f.bytes,
                           seconds=seconds, model_seconds=self.model_seconds)
