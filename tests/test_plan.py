"""pipeline.plan and pipeline.names: every job names its outputs from the same stem."""

import numpy as np
import pytest

from pipeline.names import ARCHIVE_SUFFIX, FEATURES_SUFFIX, archive_stem, output_name, sample_key
from pipeline.plan import plan_archive, plan_shards


@pytest.fixture
def nested(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("sub/d.npy", "a.npy"):
        np.save(tmp_path / "in" / rel, np.zeros((2, 4), np.float32))
    return tmp_path / "in"


def test_shards_are_named_from_their_path_under_the_input_root(nested):
    shards = plan_shards(str(nested))
    assert [(s.relpath, s.name) for s in shards] == [
        ("a.npy", "a.npy.vz.parquet"),
        ("sub/d.npy", "sub__d.npy.vz.parquet"),
    ]
    assert [s.name for s in plan_shards(str(nested), suffix=FEATURES_SUFFIX)] == [
        "a.npy.features.parquet",
        "sub__d.npy.features.parquet",
    ]
    assert [s.name for s in plan_shards(str(nested), suffix="")] == ["a.npy", "sub__d.npy"]


def test_decode_names_its_outputs_after_the_archive_files(tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    for name in ("sub__d.npy.vz.parquet", "a.npy.vz.parquet", "notes.txt"):
        (arch / name).write_bytes(b"")
    shards = plan_archive(str(arch), ".tar")
    assert [(s.relpath, s.name) for s in shards] == [("a.npy", "a.npy.tar"), ("sub__d.npy", "sub__d.npy.tar")]
    assert shards[0].source == str(arch / "a.npy.vz.parquet")


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
    assert output_name("x/y.npz") == "x__y.npz" + ARCHIVE_SUFFIX
    assert archive_stem("x__y.npz.vz.parquet") == "x__y.npz"
    with pytest.raises(ValueError, match="not an archive file name"):
        archive_stem("x.parquet")
    assert sample_key("x/y.npz", 17) == "x/y.npz:17"


def test_a_single_file_named_by_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("d.npy", np.zeros((3, 4), np.float32))
    (shard,) = plan_shards("d.npy")
    assert (shard.relpath, shard.name) == ("d.npy", "d.npy.vz.parquet")  # was "..vz.parquet", ".:0"
