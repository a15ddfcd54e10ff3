"""An encode worker whose calibration reports the loss a hostile run measured (0.19 dB against
a 0.1 dB bound): the check rows' loss is a sample and can land above the bound."""

from __future__ import annotations

from dataclasses import replace

from pipeline.workers.encode import EncodeWorker


class MissedBoundWorker(EncodeWorker):
    def calibrate(self, *args, **kwargs):
        q, c = super().calibrate(*args, **kwargs)
        return replace(q, measured_loss_db=1.9 * q.target_loss_db), c
