"""An encode worker whose calibration reports the loss a hostile run measured (0.19 dB against
a 0.1 dB bound): the check rows' loss is a sample and can land above the bound."""

from __future__ import annotations

from dataclasses import replace

from pipeline.workers.encode import EncodeWorker


class MissedBoundWorker(EncodeWorker):
    def calibrate(self, *args, **kwargs):
        q, c = super().calibrate(*args, **kwargs)
        return replace(q, measured_loss_db=1.9 * q.target_loss_db), c


class OutOfMemoryInCalibration(EncodeWorker):
    """Runs out of memory reading shards named ``oom*`` in calibration, as a sample no limit
    catches would (the hostile run's .npy ended the whole job with RayTaskError(MemoryError))."""

    def calibrate(self, shards, *args, **kwargs):
        encoded = self.encoder.encoded

        def reading(shard, *a, **k):
            if shard.name.startswith("oom"):
                raise MemoryError()
            return encoded(shard, *a, **k)

        self.encoder.encoded = reading
        try:
            return super().calibrate(shards, *args, **kwargs)
        finally:
            self.encoder.encoded = encoded


class BlindWorker(EncodeWorker):
    """An encode worker on a node that does not share the driver's output folder (as a worker
    on another machine with its own disk would be)."""

    def sees(self, uri):
        return False
