"""Many shards through the real jobs: a re-run does nothing, and the manifest lists every file.
The benchmark's "The driver at scale" section takes the counts up to 100,000; this is the
largest that fits the suite (a stand-in model, so the driver is what runs)."""

import os

import duckdb
import pytest
import torch

from jobs.benches.scale import write_shards
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.nets import MLPConfig, build_model
from tests.helpers import encode

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("local_ray")]

SHARDS = 2000


def test_thousands_of_shards_rerun_to_nothing_and_every_file_is_in_the_manifest(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = str(tmp_path / "stand-in")
    save_checkpoint(build_model(MLPConfig(input_dim=4, latent_dim=2, hidden_dims=(8,))), ckpt)
    data, arch = tmp_path / "in", tmp_path / "arch"
    write_shards(str(data), SHARDS)
    assert encode(data, ckpt, arch) == 0
    assert f"encoded {SHARDS} shards (0 already complete, 0 failed)" in capsys.readouterr().out
    files = sorted(p for p in os.listdir(arch) if p.endswith(".vz.parquet"))
    stamps = {f: os.stat(arch / f).st_mtime_ns for f in files}
    count, rows, names = duckdb.sql(
        f"SELECT count(*), sum(rows), count(DISTINCT name) FROM '{arch}/_manifest/files.parquet'"
    ).fetchall()[0]
    assert (count, rows, names) == (SHARDS, 2 * SHARDS, SHARDS) and len(files) == SHARDS

    assert encode(data, ckpt, arch) == 0  # again: nothing to do, nothing rewritten
    assert f"encoded 0 shards ({SHARDS} already complete, 0 failed)" in capsys.readouterr().out
    assert {f: os.stat(arch / f).st_mtime_ns for f in files} == stamps
    assert duckdb.sql(f"SELECT count(*) FROM '{arch}/_manifest/files.parquet'").fetchall()[0] == (SHARDS,)
