"""An encode job's identity and its ``job.json``: the settings it was started with and the
quantizer and codec parameters calibrated once for every shard.

    first run:  settings -> calibrate -> JobParams (fingerprint of all three) -> job.json
    re-run:     job.json -> the same JobParams, no calibration; other settings are refused

Every archive file and completion record carries the job fingerprint, so a shard written
with other parameters is never taken for done.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from pipeline.codec.codec import CodecParams
from pipeline.codec.quantize import QuantizerParams
from pipeline.core import storage
from pipeline.core.errors import ConfigError
from pipeline.core.names import ARCHIVE_SUFFIX
from pipeline.ledger.completion import DONE
from pipeline.ledger.manifest import FAILURES, MANIFEST, MANIFEST_DIR
from pipeline.ledger.plan import fingerprint

JOB = "job.json"
OWN_FILES = {DONE, JOB, MANIFEST, MANIFEST_DIR, FAILURES}


@dataclass(frozen=True)
class JobParams:
    """What every encode worker needs to write a shard of this job."""

    quantizer: QuantizerParams
    codec: CodecParams
    job_fingerprint: str

    @classmethod
    def of(cls, settings: dict[str, Any], quantizer: QuantizerParams, codec: CodecParams) -> JobParams:
        return cls(quantizer, codec, fingerprint(settings, quantizer.to_dict(), codec.to_dict()))


@dataclass(frozen=True)
class EncodeJob:
    """The contents of ``job.json``."""

    settings: dict[str, Any]
    params: JobParams

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "job_fingerprint": self.params.job_fingerprint,
                "settings": self.settings,
                "quantizer": self.params.quantizer.to_dict(),
                "codec": self.params.codec.to_dict(),
                "warnings": bound_warnings(self.params.quantizer),
            },
            indent=2,
        ).encode()


def bound_warnings(q: QuantizerParams) -> list[str]:
    """What the job's summary and job.json must say of a quantizer that missed its bound: the
    loss measured on the check rows above ``--max-loss-db`` (none where it kept it)."""
    if q.target_loss_db is None or q.measured_loss_db is None or q.measured_loss_db <= q.target_loss_db:
        return []
    return [
        f"the quantizer missed its bound: loss {q.measured_loss_db:.3f} dB measured on the check rows "
        f"(standard error {q.measured_loss_se_db or 0:.3f} dB) against --max-loss-db {q.target_loss_db:g}; "
        "more --calibration-rows or a smaller --max-loss-db may keep it"
    ]


def load_job(output: str) -> EncodeJob | None:
    """The job recorded in ``output``, or None where there is none yet."""
    uri = storage.join(output, JOB)
    try:
        data = json.loads(storage.read_bytes(uri))
        settings = data["settings"]
        return EncodeJob(
            settings,
            JobParams.of(
                settings, QuantizerParams.from_dict(data["quantizer"]), CodecParams.from_dict(data["codec"])
            ),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise ConfigError(
            f"{uri}: not a readable job record ({err}); use --overwrite to start the archive afresh"
        ) from err


def resume_job(output: str, settings: dict[str, Any]) -> EncodeJob | None:
    """The earlier job to finish in ``output`` (None: there is none, calibrate afresh); refuses
    an output that holds another job's archive."""
    previous = load_job(output)
    if previous is not None and previous.settings.get("names_version") != settings.get("names_version"):
        raise ConfigError(
            f"{output} holds an archive written by an older vaezip, which named files "
            "<input>.<extension>.vz.parquet; this one writes <input>.vz.parquet. Decode that archive "
            "as it is, or encode again into another --output (or with --overwrite)"
        )
    if previous is not None and previous.settings != settings:
        raise ConfigError(
            f"{output} already holds an archive of another job "
            "(job.json settings differ); use another --output or --overwrite"
        )
    return previous


def save_job(output: str, job: EncodeJob) -> None:
    storage.write_bytes(storage.join(output, JOB), job.to_json())


def clear_archive(output: str) -> int:
    """``--overwrite``: remove every file an encode job writes in ``output`` (archive files,
    completion records, job.json, manifest, failures, vaezip's temporary files), so the new
    job's files are the only ones left; anybody else's files stay. Returns how many went."""
    names = [n for n in storage.listdir(output) if n.endswith(ARCHIVE_SUFFIX) or n in OWN_FILES]
    # --fan-out's sub-folders: the archive files in them, and the folders they leave empty
    fanned = [n for n in storage.file_sizes(output, depth=1) if "/" in n and n.endswith(ARCHIVE_SUFFIX)]
    folders = sorted({posixpath.dirname(n) for n in fanned})
    for name in names + fanned:
        storage.remove(storage.join(output, name), recursive=name in (DONE, MANIFEST_DIR))
    temps = storage.remove_stale_temps(output, tags=None, subfolders=(DONE, *folders))
    for folder in folders:
        if not storage.listdir(storage.join(output, folder)):
            storage.remove(storage.join(output, folder), recursive=True)
    return len(names) + len(fanned) + temps
