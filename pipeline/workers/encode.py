"""EncodeWorker: one shard in, one archive file out. A plain class; Ray makes it remote.

Encoder (prefetch thread reads; this thread runs the encoder)
  -> writer thread, one batch behind: duplicate keys refused -> compress (quantize with
     the job-wide params, layout, crc32) -> CodeRows -> ArchiveWriter (zstd column chunks)
  -> run_shard: temporary name -> commit -> _done/<name>.json (written last)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from pipeline.codec.codec import Codec, CodecConfig, CodecParams, calibrate_codec, latent_width
from pipeline.codec.compress import compress, encode_codes
from pipeline.codec.format import ArchiveMeta, ArchiveWriter, CodeRows
from pipeline.codec.quantize import (
    QuantizerConfig,
    QuantizerParams,
    calibrate,
    fit_latent_steps,
    latent_errors,
    quantize,
    stats_from_latents,
)
from pipeline.codec.ratecontrol import Rows, calibrate_loss, rows_to_decode
from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.overlap import one_behind
from pipeline.core.value_range import ValueRange
from pipeline.data.rd_rows import hyper_of, learned_params
from pipeline.data.readers import ReadOptions, count_rows
from pipeline.data.resize import Preprocess
from pipeline.ledger.completion import ShardResult, Written, run_shard
from pipeline.ledger.job import JobParams
from pipeline.ledger.shard import Shard
from pipeline.model.nets import config_to_dict
from pipeline.model.nets.rd import RDModel
from pipeline.model.precision import autocast, to_device
from pipeline.workers.encoder import Encoded, Encoder, check_new_keys
from pipeline.workers.model_worker import ModelWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeSpec:
    """What every encode (and feature) actor is built from."""

    checkpoint: str
    output: str
    read: ReadOptions = ReadOptions()
    device: str = "auto"
    threads: int | None = None
    key_column: str | None = None
    value_range: ValueRange | None = None  # None: the checkpoint's
    tile: int | None = None  # --tile: images archived as tiles of tile x tile pixels
    tile_margin: int = 0  # pixels of context each tile is encoded with (pipeline.data.tiles)
    preprocess: Preprocess | None = None  # --size / --buckets (pipeline.data.resize)
    precision: str = "auto"  # pipeline.model.precision
    host_workers: int | None = None  # None: the CPUs Ray gave the actor


def code_rows(enc: Encoded, job: JobParams, codec: Codec) -> tuple[CodeRows, int]:
    """An encoded batch as the archive stores it, and how many values were clipped."""
    widths = [latent_width(s) for s in enc.latent_shapes]
    if enc.codes is not None:
        payloads, crcs = encode_codes(enc.codes, codec, widths)
        clipped = enc.clipped
    else:
        payloads, crcs, clipped = compress(enc.means, job.quantizer, codec, widths)
    return CodeRows(
        keys=enc.keys,
        codes=payloads,
        crc32=crcs,
        shapes=[list(lay.shape) for lay in enc.layouts],
        dtypes=[lay.dtype for lay in enc.layouts],
        latent_shapes=[list(s) for s in enc.latent_shapes],
    ), clipped


# calibration reads rows of this many shards, spread over the dataset, and as many again,
# spread between them, only where those fall short
CALIBRATION_SHARDS = 32


def calibration_shards(shards: list[Shard]) -> list[Shard]:
    """The shards calibration reads, in the order it reads them: up to ``CALIBRATION_SHARDS``
    spread evenly over the list, the first and the last included, then one spare halfway
    between each two of them. The driver hands the actor these alone (a million shard
    descriptors would be 100 MB in one call)."""
    n = len(shards)
    spread = sorted({round(i) for i in np.linspace(0, n - 1, min(n, CALIBRATION_SHARDS))})
    taken = set(spread)
    spares = sorted({(a + b) // 2 for a, b in zip(spread, spread[1:], strict=False)} - taken)
    return [shards[i] for i in spread + spares]


def spread_rows(shard: Shard, n: int, whole: bool = False) -> tuple[int, ...] | None:
    """``n`` row numbers spread evenly over ``shard`` (None: all of it, in order, where it
    has at most ``n`` rows or its header does not say how many)."""
    total = count_rows(shard.source, shard.members, whole)
    if total is None or total <= n:
        return None
    return tuple(sorted({int(r) for r in np.linspace(0, total - 1, n).round()}))


class EncodeWorker(ModelWorker):
    def __init__(self, spec: EncodeSpec) -> None:
        super().__init__(
            spec.checkpoint, spec.device, spec.threads, spec.precision, spec.host_workers, spec.read.host_pool
        )
        self.spec = spec
        self.encoder = Encoder(
            self.ckpt,
            self.device,
            replace(spec.read, host_workers=self.host_workers),
            spec.key_column,
            self.clock,
            spec.value_range,
            spec.tile,
            self.dtype,
            spec.tile_margin,
            spec.preprocess,
        )
        self._hyper = hyper_of(self.ckpt.model)  # codec "learned" of an rd hyperprior needs it

    def calibrate(
        self,
        shards: list[Shard],
        max_rows: int,
        qconfig: QuantizerConfig,
        cconfig: CodecConfig,
        ordered: bool = False,
    ) -> tuple[QuantizerParams, CodecParams]:
        """Quantizer and codec parameters from ``max_rows`` rows of ``shards``: rows spread
        evenly over each of up to ``CALIBRATION_SHARDS`` shards spread over the list (a
        dataset's shards often differ, e.g. one source each, and so do the parts of a shard,
        e.g. neighbouring crops of one photo), further shards only where those fall short.
        Where a shard's row count is not in its header (Arrow streams, .npz, WebDataset),
        its first rows. ``ordered``: ``shards`` are ``calibration_shards`` already. An rd model
        brings its own: its latents rounded, coded under its learned priors."""
        if isinstance(self.ckpt.model, RDModel):
            log.info("an rd model: latents rounded and coded under its own priors (codec learned)")
            return learned_params(self.ckpt.model)
        means, logvars, widths = [], [], []
        rows: list[tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]] = []
        errors = []
        order = shards if ordered else calibration_shards(shards)
        quota = -(-max_rows // max(min(len(order), CALIBRATION_SHARDS), 1))
        for shard in order:
            taken = 0
            try:
                for enc in self.encoder.encoded(
                    shard, only=spread_rows(shard, quota, self.spec.read.array_samples == "whole")
                ):
                    means += [m.T for m in enc.means]  # (P, C): positions pool across rows
                    widths += [latent_width(s) for s in enc.latent_shapes]
                    logvars += [v.T for v in enc.logvars]
                    if qconfig.mode == "loss":  # model input, latent, latent shape, sample shape
                        shapes = [lay.shape for lay in enc.layouts]
                        rows += zip(enc.inputs, enc.means, enc.latent_shapes, shapes, strict=True)
                    taken += len(enc.means)
                    if len(means) >= max_rows or taken >= quota:
                        break
            except InputError as err:  # a bad shard fails on its own later, not the job
                log.warning("calibration skips an input: %s", err)  # the error names it, and the row
                errors.append(err)
            except Exception as err:  # one shard's failure (MemoryError, a reader's bug) is that
                # shard's, said in one line: it fails again, on its own, when it is processed
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                skipped = InputError(shard.source, f"calibration could not read it ({reason})")
                log.warning("calibration skips an input: %s", skipped)
                errors.append(skipped)
            if len(means) >= max_rows:
                break
        if not means:
            raise InputError(
                shards[0].source if shards else "?",
                "no shard could be read to "
                f"calibrate the quantizer; first error: {errors[0] if errors else '-'}",
            )
        m = np.concatenate(means)[:, :, None]  # (sum P, C, 1)
        lv = np.concatenate(logvars)[:, :, None]
        stats = stats_from_latents(m, lv)
        qparams = calibrate(stats, qconfig)
        assert stats.std is not None
        if qconfig.mode == "latent":  # steps fitted on every other row, checked on the others
            fit, check = (np.concatenate(means[i::2] or means)[:, :, None] for i in (0, 1))
            qparams = fit_latent_steps(fit, check, qparams, stats.std, qconfig.max_latent_error)
        if not any(qparams.active):  # every code would be 0 bits: an archive of one mean sample
            raise ConfigError(
                f"the checkpoint's latents carry no information: 0 of {len(qparams.active)} channels "
                "are active (their KL is about 0, so every sample would decode to one mean); the model "
                "collapsed in training: retrain it (a --value-range that fits the data, a smaller "
                "--beta, more steps)"
            )
        if qconfig.mode == "loss":
            # the rows decoded are taken evenly over the sample, every shard's
            n = rows_to_decode(rows[0][0].size) if rows else 0
            picked = np.linspace(0, len(rows) - 1, min(len(rows), n)).round().astype(int)
            qparams = calibrate_loss(
                self._loss_rows([rows[i] for i in sorted(set(picked.tolist()))]),
                qconfig.max_loss_db,
                np.asarray(qparams.active),
            )
        if qparams.measured_latent_error is None:  # the other modes: on the channels kept
            kept = np.asarray(qparams.active)
            rel = latent_errors(m, qparams, stats.std)[kept]
            qparams = replace(qparams, measured_latent_error=float(rel.max()) if rel.size else None)
        cparams = calibrate_codec(
            [quantize(np.ascontiguousarray(a.T)[None], qparams)[0] for a in means[:max_rows]],
            cconfig,
            widths[:max_rows],
        )
        log.info(
            "calibrated on %d rows: %d of %d channels active, %s-major codes, dictionary %d bytes",
            len(means),
            sum(qparams.active),
            qparams.channels,
            cparams.layout,
            len(cparams.dictionary),
        )
        return qparams, cparams

    def _loss_rows(
        self, rows: list[tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]]
    ) -> list[Rows]:
        """Calibration rows grouped by shape, each group with the decoder on this device."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, _, lshape, sshape) in enumerate(rows):
            groups.setdefault((lshape, sshape), []).append(i)
        out = []
        for (lshape, sshape), idx in groups.items():
            size = None if self.ckpt.config.kind == "mlp" else (sshape[0], sshape[1])
            x = np.stack([rows[i][0] for i in idx])
            z = np.stack([rows[i][1].reshape(lshape) for i in idx])
            out.append(Rows(x, z, self._decoder(size)))
        return out

    def _decoder(self, size: tuple[int, int] | None) -> Callable[[np.ndarray], np.ndarray]:
        @torch.inference_mode()
        def decode(z: np.ndarray) -> np.ndarray:
            parts = []
            for i in range(0, len(z), 64):
                zt = to_device(np.asarray(z[i : i + 64], dtype=np.float32), self.device)
                with autocast(self.device, self.dtype):
                    y = self.ckpt.model.decode(zt, size)
                parts.append(y.float().clamp(0.0, 1.0).cpu().numpy())
            return np.concatenate(parts)

        return decode

    def process(self, shard: Shard, job: JobParams) -> ShardResult:
        meta = ArchiveMeta(
            model_fingerprint=self.ckpt.fingerprint,
            model_config=config_to_dict(self.ckpt.config),
            quantizer=job.quantizer,
            codec=job.codec,
            source_uri=shard.source,
            job_fingerprint=job.job_fingerprint,
            value_range=self.encoder.value_range,
            tile=self.spec.tile,
            tile_margin=self.spec.tile_margin if self.spec.tile else 0,
        )
        codec = Codec(job.codec, self._hyper)

        def body(f: storage.HashingWriter, uri: str) -> Written:
            seen: set[str] = set()
            with ArchiveWriter(f, meta, uri) as writer:

                def write(enc: Encoded) -> tuple[int, int]:
                    check_new_keys(shard, enc, seen)
                    rows, clipped = code_rows(enc, job, codec)
                    writer.write(rows, enc.batch.columns, enc.batch.features)
                    return len(rows), clipped

                # an accelerator quantizes beside its model and copies codes back; on a CPU
                # the writer thread quantizes, on another core than the model's; an rd
                # hyperprior's side information is of the latents before rounding: they come back
                on_device = job.quantizer if self.device.type != "cpu" and self._hyper is None else None
                counts = one_behind(self.encoder.encoded(shard, on_device), write)
            return Written(rows=sum(n for n, _ in counts), clipped=sum(c for _, c in counts))

        return run_shard(self.spec.output, shard, shard.name, job.job_fingerprint, body, self.clock)
