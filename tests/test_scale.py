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


def test_fan_out_puts_the_archive_files_in_sub_folders_that_every_reader_finds(
    tmp_path, digits_dir, digits_ckpt, capsys
):
    """--fan-out 3: each archive file and its record in one of three sub-folders picked by its
    name; the manifest lists them by that path (DuckDB), a re-run does nothing, decode and the
    training reader get every row, --overwrite leaves no sub-folder behind."""
    from pipeline.core.names import fanned
    from pipeline.loaders.torch_data import ArchiveDataset
    from tests.helpers import decode

    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch, "--fan-out", "3") == 0
    names = [f"digits-{i:05d}.vz.parquet" for i in range(4)]
    placed = sorted(fanned(n, 3) for n in names)
    assert len({p.split("/")[0] for p in placed}) > 1  # the four names do spread
    assert sorted(str(p.relative_to(arch)) for p in arch.glob("*/*.vz.parquet")) == placed
    assert (
        sorted(str(p.relative_to(arch / "_done"))[: -len(".json")] for p in arch.glob("_done/*/*.json"))
        == placed
    )
    assert not list(arch.glob("*.vz.parquet"))
    listed = duckdb.sql(f"SELECT name, rows FROM '{arch}/_manifest/files.parquet' ORDER BY name").fetchall()
    assert [n for n, _ in listed] == placed and sum(r for _, r in listed) == 1797
    capsys.readouterr()
    assert encode(digits_dir, digits_ckpt, arch, "--fan-out", "3") == 0
    assert "encoded 0 shards (4 already complete, 0 failed)" in capsys.readouterr().out

    assert decode(arch, digits_ckpt, tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == [
        f"digits-{i:05d}.npy" for i in range(4)
    ]
    assert sum(1 for _ in ArchiveDataset(str(arch), decode=False)) == 1797

    assert encode(digits_dir, digits_ckpt, arch, "--overwrite") == 0  # back to one folder
    assert sorted(p.name for p in arch.glob("*.vz.parquet")) == names
    assert not [p for p in arch.iterdir() if p.is_dir() and not p.name.startswith("_")]
