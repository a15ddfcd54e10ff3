"""The loss a job reports against the loss measured afterwards over every row.

``jobs.encode --max-loss-db D`` measures the PSNR drop on calibration rows it did not fit on
and writes it into job.json; ``jobs.verify --checkpoint`` decodes the unquantized latents of
every original row and measures the same drop over all of them. Both are real jobs here, on a
local Ray the jobs start themselves.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile

from jobs import decode as decode_job
from jobs import encode as encode_job
from jobs import verify as verify_job
from jobs._cli import run_main


def measure(data: str, checkpoint: str, max_loss_db: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="vzbench-agree-") as tmp:
        arch, rec = os.path.join(tmp, "archive"), os.path.join(tmp, "restored")
        common = ["--checkpoint", checkpoint]
        argv = ["--input", data, "--output", arch, "--max-loss-db", str(max_loss_db), *common]
        if run_main(encode_job.main, argv) != 0:
            raise RuntimeError(f"encode of {data} failed")
        with open(os.path.join(arch, "job.json")) as f:
            q = json.load(f)["quantizer"]
        if run_main(decode_job.main, ["--input", arch, "--output", rec, *common]) != 0:
            raise RuntimeError(f"decode of {arch} failed")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            argv = ["--original", data, "--restored", rec, "--archive", arch, *common]
            if run_main(verify_job.main, argv) != 0:
                raise RuntimeError(f"verify of {arch} failed")
        found = re.search(r"quantizing cost (-?[\d.]+) dB", out.getvalue())
        if not found:
            raise RuntimeError(f"verify printed no loss: {out.getvalue()[-500:]}")
        verified = float(found.group(1))
        return {
            "data": data,
            "target_loss_db": max_loss_db,
            "job_loss_db": q["measured_loss_db"],
            "job_loss_se_db": q.get("measured_loss_se_db"),
            "verify_loss_db": verified,
            "difference_db": verified - q["measured_loss_db"],
        }
