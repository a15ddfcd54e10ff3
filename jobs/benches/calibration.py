"""What pixel rate control costs: ``--max-loss-db``'s calibration against the encode of its rows.

An encode worker calibrates on the demo's models and data as a job would (2,048 rows, one
thread): once with ``--quantizer posterior`` (the encoder's pass over the rows and nothing that
needs a decoder: the cost of encoding them) and once with ``--max-loss-db 0.1`` (the same pass,
then the decoder's passes of the steps' search). The ratio of the two is the rate control's
cost as a multiple of the encode of its calibration rows; the fastest of ``repeats`` of each.
"""

from __future__ import annotations

import tempfile
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pipeline.codec.quantize import QuantizerParams
    from pipeline.workers.encode import EncodeWorker

ROWS = 2048


def _timed(worker: EncodeWorker, shards: list, mode: str, repeats: int) -> tuple[float, QuantizerParams]:
    from pipeline.codec.codec import CodecConfig
    from pipeline.codec.quantize import QuantizerConfig

    best, params = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        params, _ = worker.calibrate(shards, ROWS, QuantizerConfig(mode=mode), CodecConfig())
        best = min(best, time.perf_counter() - start)
    assert params is not None
    return best, params


def measure(models: dict[str, tuple[str, str]], repeats: int = 2) -> dict:
    """``models``: name -> (checkpoint, data folder)."""
    from pipeline.ledger.plan import plan_shards
    from pipeline.workers.encode import EncodeSpec, EncodeWorker

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict = {"rows": ROWS, "max_loss_db": 0.1, "runs": []}
    try:
        for name, (ckpt, data) in models.items():
            worker = EncodeWorker(EncodeSpec(checkpoint=ckpt, output=tempfile.mkdtemp(), threads=1))
            shards = plan_shards(data)
            encode_s, _ = _timed(worker, shards, "posterior", repeats)
            loss_s, q = _timed(worker, shards, "loss", repeats)
            out["runs"].append(
                {
                    "model": name,
                    "encode_s": encode_s,
                    "loss_s": loss_s,
                    "ratio": loss_s / encode_s,
                    "measured_loss_db": q.measured_loss_db,
                    "bits_per_value": q.bits_per_value,
                }
            )
    finally:
        torch.set_num_threads(threads)
    return out
