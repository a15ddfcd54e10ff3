"""pipeline.ledger.plan and pipeline.core.names: every job names its outputs from the same stem."""

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.names import (
    ARCHIVE_SUFFIX,
    DATA_SUFFIXES,
    FEATURES_SUFFIX,
    archive_stem,
    output_name,
    sample_key,
)
from pipeline.data import readers
from pipeline.ledger.plan import plan_archive, plan_shards


@pytest.fixture
def nested(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("sub/d.npy", "a.npy"):
        np.save(tmp_path / "in" / rel, np.zeros((2, 4), np.float32))
    return tmp_path / "in"


def test_shards_are_named_from_their_path_under_the_input_root(nested):
    shards = plan_shards(str(nested))
    assert [(s.relpath, s.name) for s in shards] == [
        ("a.npy", "a.vz.parquet"),
        ("sub/d.npy", "sub__d.vz.parquet"),
    ]
    assert [s.name for s in plan_shards(str(nested), suffix=FEATURES_SUFFIX)] == [
        "a.features.parquet",
        "sub__d.features.parquet",
    ]
    assert [s.name for s in plan_shards(str(nested), suffix="")] == ["a", "sub__d"]


def test_two_inputs_with_one_stem_are_refused_before_anything_is_written(nested, tmp_path):
    np.save(nested / "sub__d.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match=r"sub/d\.npy and .*sub__d\.npy would both be written to sub__d"):
        plan_shards(str(nested))
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    for name in ("t.parquet", "t.pq"):
        pq.write_table(pa.table({"x": [[1.0, 2.0]]}), tmp_path / "pq" / name)
    with pytest.raises(ConfigError, match=r"would both be written to t\.vz\.parquet"):
        plan_shards(str(tmp_path / "pq"))


def test_inputs_whose_archive_files_decode_to_one_name_are_refused_at_plan_time(tmp_path):
    """x.npy and x.npy.npy: two archive files (x.vz.parquet, x.npy.vz.parquet) that decode
    would refuse as both written to x.npy; refused before the encode writes anything."""
    (tmp_path / "in").mkdir()
    for name in ("x.npy", "x.npy.npy"):
        np.save(tmp_path / "in" / name, np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match=r"x\.npy\.npy would be archived as .* which both decode to x\.\*"):
        plan_shards(str(tmp_path / "in"))


def test_decode_names_its_outputs_after_the_archive_files(tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    # one archive file of today's names, one of an older vaezip's (input extension kept)
    for name in ("sub__d.npy.vz.parquet", "a.vz.parquet", "notes.txt"):
        (arch / name).write_bytes(b"")
    shards = plan_archive(str(arch), ".tar")
    assert [(s.relpath, s.name) for s in shards] == [("a", "a.tar"), ("sub__d", "sub__d.tar")]
    assert shards[0].source == str(arch / "a.vz.parquet")
    (arch / "a.npy.vz.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"would both be written to a\.tar"):
        plan_archive(str(arch), ".tar")


def test_image_folders_are_grouped_into_numbered_shards(tmp_path):
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"{i}.png")
    shards = plan_shards(str(tmp_path), images_per_shard=2)
    assert [(s.name, len(s.members)) for s in shards] == [
        ("images-00000.vz.parquet", 2),
        ("images-00001.vz.parquet", 2),
        ("images-00002.vz.parquet", 1),
    ]


def test_names_and_keys():
    assert output_name("x/y.npz") == "x__y" + ARCHIVE_SUFFIX
    assert output_name("v1.2.npy") == "v1.2" + ARCHIVE_SUFFIX  # only a data file's extension goes
    assert output_name("images-00003") == "images-00003" + ARCHIVE_SUFFIX
    assert archive_stem("x__y.vz.parquet") == "x__y"
    assert archive_stem("x__y.npz.vz.parquet") == "x__y"  # an archive of an older vaezip
    assert archive_stem("v1.2.vz.parquet") == "v1.2"
    with pytest.raises(ValueError, match="not an archive file name"):
        archive_stem("x.parquet")
    assert sample_key("x/y.npz", 17) == "x/y:17"
    assert sample_key(".npy", 0) == ".npy:0"  # a hidden file keeps its whole name


def test_every_format_the_readers_take_is_a_data_suffix():
    assert set(readers.SUFFIXES) == set(DATA_SUFFIXES)


def test_a_single_file_named_by_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("d.npy", np.zeros((3, 4), np.float32))
    (shard,) = plan_shards("d.npy")
    assert (shard.relpath, shard.name) == ("d.npy", "d.vz.parquet")  # was "..vz.parquet", ".:0"


def test_calibration_is_handed_a_bounded_spread_of_the_shards():
    from pipeline.ledger.shard import Shard
    from pipeline.workers.encode import CALIBRATION_SHARDS, calibration_shards

    shards = [Shard(f"s{i}.npy", f"s{i}", f"s{i}.vz.parquet") for i in range(100_000)]
    picked = calibration_shards(shards)
    assert len(picked) == 2 * CALIBRATION_SHARDS - 1 and len({s.name for s in picked}) == len(picked)
    first = [int(s.relpath[1:]) for s in picked[:CALIBRATION_SHARDS]]  # read first: spread over all
    assert first[0] == 0 and first[-1] == 99_999 and first == sorted(first)
    spares = [int(s.relpath[1:]) for s in picked[CALIBRATION_SHARDS:]]  # between them
    assert all(a < b < c for a, b, c in zip(first, spares, first[1:], strict=False))
    few = calibration_shards(shards[:5])
    assert [s.relpath for s in few] == ["s0", "s1", "s2", "s3", "s4"]  # every one
    some = [s.relpath for s in calibration_shards(shards[:40])]  # 32 spread, spares between
    assert some[:3] == ["s0", "s1", "s3"] and some[31] == "s39" and len(some) == 40 and len(set(some)) == 40


def test_bookkeeping_folders_and_hidden_files_are_not_input(tmp_path):
    """A decode's output read as input (its _manifest/, _done/), a writer's staging folder, a
    notebook's checkpoints and macOS's ._ files are not data."""
    for rel in [
        "a.npy",
        "sub/b.npy",
        "_manifest/files.npy",
        "_done/c.npy",
        ".x.vz-staging/d.npy",
        "sub/.ipynb_checkpoints/e.npy",
        "sub/._f.npy",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / rel, np.zeros((1, 2), np.float32))
    assert [s.relpath for s in plan_shards(str(tmp_path))] == ["a.npy", "sub/b.npy"]
    assert [s.relpath for s in plan_shards(str(tmp_path / "sub"))] == ["b.npy"]


def test_a_local_folder_is_listed_as_fsspec_lists_it(tmp_path):
    """The driver walks a local folder itself (fsspec's listing keeps a dict of a dozen fields
    per file); what it finds, and each file's identity, must be what fsspec's gives, or every
    recorded input identity would read as changed."""
    import os

    import fsspec

    from pipeline.core import storage

    root = tmp_path / "in"
    for rel in ("x.npy", "a/y.npy", "a/b/z.npy", "_done/q.npy", ".hid/h.npy", ".dot.npy", "c/w.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"data" * len(rel))
    os.symlink(root / "x.npy", root / "c" / "link.npy")
    os.symlink(tmp_path / "nowhere", root / "c" / "broken.npy")
    os.symlink(root / "a", root / "c" / "dirlink")
    fs = fsspec.filesystem("file")
    base = str(root) + "/"
    expected = sorted(
        (p, storage.identity(i))
        for p, i in fs.find(str(root), detail=True).items()
        if not storage._bookkeeping(p[len(base) :])
    )
    assert storage.expand_identified(str(root)) == expected
    assert [p for p, _ in expected] == [
        f"{root}/{rel}"
        for rel in ("a/b/z.npy", "a/y.npy", "c/broken.npy", "c/dirlink", "c/link.npy", "c/w.txt", "x.npy")
    ]
    assert storage.file_sizes(str(root)) == {"x.npy": 20, ".dot.npy": 32}
    assert storage.listdir(str(root / "missing")) == [] and storage.file_sizes(str(root / "x.npy")) == {}
