import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.errors import InputError
from pipeline.data.readers import ReadOptions, iter_batches, list_sources


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _collect(uri, batch_rows=3, **kw):
    batches = list(iter_batches(uri, ReadOptions(batch_rows=batch_rows, **kw)))
    return batches, [s for b in batches for s in b.samples]


def test_npy_streams_rows_in_batches_exactly(tmp_path):
    arr = np.random.default_rng(0).random((10, 4, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    batches, samples = _collect(str(tmp_path / "a.npy"))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [b.start_row for b in batches] == [0, 3, 6, 9]
    assert np.array_equal(np.stack(samples), arr)


def test_truncated_npy_names_file_and_row(tmp_path):
    arr = np.arange(100, dtype=np.int64).reshape(20, 5).astype(np.float64)
    np.save(tmp_path / "t.npy", arr)
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[: len(raw) - 7 * 5 * 8])
    with pytest.raises(InputError, match=r"t\.npy row 13: file is truncated") as err:
        _collect(str(tmp_path / "t.npy"), batch_rows=4)
    assert err.value.row == 13


def test_object_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="object arrays are refused"):
        _collect(str(tmp_path / "o.npy"))


def test_npz_passes_through_other_arrays(tmp_path, digits):
    images, labels = digits
    np.savez(tmp_path / "d.npz", image=images[:7], label=labels[:7], other=np.zeros(3))
    batches, samples = _collect(str(tmp_path / "d.npz"))
    assert np.array_equal(np.stack(samples), images[:7])
    assert sum((b.columns["label"] for b in batches), []) == labels[:7].tolist()
    assert "other" not in batches[0].columns  # different row count: not a column


def test_npz_needs_to_know_which_array(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(InputError, match="which array holds the samples"):
        _collect(str(tmp_path / "d.npz"))
    _, samples = _collect(str(tmp_path / "d.npz"), array_key="b")
    assert len(samples) == 2


def test_parquet_hf_image_struct_round_trips_pixels(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8) for i in range(5)]
    table = pa.Table.from_pylist(
        [{"image": {"bytes": _png(im), "path": f"{i}.png"}, "caption": f"c{i}"} for i, im in enumerate(imgs)]
    )
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=2)
    batches, samples = _collect(str(tmp_path / "p.parquet"), batch_rows=2)
    assert all(np.array_equal(a, b) for a, b in zip(samples, imgs, strict=True))
    assert sum((b.columns["caption"] for b in batches), []) == [f"c{i}" for i in range(5)]


def test_images_named_by_path_alone_are_read_from_beside_the_file(tmp_path):
    """``Dataset.to_parquet`` of images loaded from files stores ``{bytes: None, path}``."""
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "imgs").mkdir()
    for i, im in enumerate(imgs):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(im))
    paths = ["imgs/0.png", str(tmp_path / "imgs" / "1.png"), "imgs/2.png"]  # relative and absolute
    rows = [{"image": {"bytes": None, "path": p}} for p in paths]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    _, samples = _collect(str(tmp_path / "p.parquet"))
    assert all(np.array_equal(a, b) for a, b in zip(samples, imgs, strict=True))
    rows[1]["image"]["path"] = "imgs/gone.png"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    with pytest.raises(
        InputError, match=r"p\.parquet row 1: image struct has no bytes and its path .*gone\.png"
    ):
        _collect(str(tmp_path / "p.parquet"))


def test_the_column_datasets_calls_an_image_is_the_sample(tmp_path):
    import json

    mask = {"bytes": _png(np.zeros((4, 4), np.uint8)), "path": None}
    photo = {"bytes": _png(np.full((4, 4, 3), 7, np.uint8)), "path": None}
    table = pa.Table.from_pylist([{"mask": mask, "photo": photo, "label": 1}])
    features = {"photo": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b"]}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, tmp_path / "p.parquet")
    (batch,), (sample,) = _collect(str(tmp_path / "p.parquet"))
    assert sample.shape == (4, 4, 3) and sample[0, 0, 0] == 7  # not the first image column
    assert set(batch.columns) == {"mask", "label"}
    assert batch.features == {"label": features["label"]}  # travels with the passthrough columns


def test_img2dataset_indexes_beside_their_tars_are_left_out(tmp_path):
    for name in ("00000.tar", "00000.parquet", "00001.tar", "00001.parquet", "00000_stats.json"):
        (tmp_path / name).write_bytes(b"")
    assert [f.rsplit("/", 1)[1] for f in list_sources(str(tmp_path))] == ["00000.tar", "00001.tar"]
    (tmp_path / "extra.parquet").write_bytes(b"")  # a Parquet file that is no tar's index
    with pytest.raises(InputError, match="mixed formats"):
        list_sources(str(tmp_path))


def test_parquet_plain_binary_and_tensor_columns(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    pq.write_table(pa.table({"id": [7], "png": [_png(gray)]}), tmp_path / "b.parquet")
    _, samples = _collect(str(tmp_path / "b.parquet"))
    assert np.array_equal(samples[0], gray)
    vecs = np.random.default_rng(1).random((4, 2, 3))
    pq.write_table(pa.table({"x": vecs.tolist(), "y": list(range(4))}), tmp_path / "t.parquet")
    batches, samples = _collect(str(tmp_path / "t.parquet"))
    assert np.array_equal(np.stack(samples), vecs)
    assert batches[0].columns["y"] == [0, 1, 2]


def test_corrupt_image_bytes_name_file_and_row(tmp_path):
    good = _png(np.zeros((4, 4), dtype=np.uint8))
    pq.write_table(pa.table({"image": [good, good, good[:20], good]}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match=r"c\.parquet row 2: corrupt image bytes"):
        _collect(str(tmp_path / "c.parquet"), batch_rows=2)


def test_missing_column_is_named(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "m.parquet")
    with pytest.raises(InputError, match="no image-bytes or tensor column"):
        _collect(str(tmp_path / "m.parquet"))
    with pytest.raises(InputError, match="missing column 'img'"):
        _collect(str(tmp_path / "m.parquet"), column="img")


def test_list_sources_folder_glob_and_memory_url(tmp_path):
    for name in ("b.npy", "a.npy", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert list_sources(str(tmp_path)) == [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert list_sources(str(tmp_path / "b*")) == [str(tmp_path / "b.npy")]
    with pytest.raises(InputError, match="no such file"):
        list_sources(str(tmp_path / "missing"))
    import fsspec

    with fsspec.open("memory://ds/x.npy", "wb") as f:
        np.save(f, np.ones((2, 3)))
    (src,) = list_sources("memory://ds")
    assert src.startswith("memory://") and src.endswith("/ds/x.npy")
    _, samples = _collect(src)
    assert np.array_equal(np.stack(samples), np.ones((2, 3)))


def test_mixed_formats_are_refused(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "b.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="mixed formats"):
        list_sources(str(tmp_path))


def _image_folder(root, n=7):
    rng = np.random.default_rng(1)
    imgs = {}
    for i in range(n):
        rel = f"{'cats' if i % 2 else 'dogs'}/{i:03d}.png"
        imgs[rel] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(imgs[rel]))
    return imgs


def test_image_folder_groups_into_shards_with_paths_as_keys(tmp_path):
    from pipeline.ledger.plan import plan_shards

    imgs = _image_folder(tmp_path)
    shards = plan_shards(str(tmp_path), images_per_shard=3)
    assert [s.name for s in shards] == [f"images-{i:05d}.vz.parquet" for i in range(3)]
    assert [len(s.members) for s in shards] == [3, 3, 1]
    assert plan_shards(str(tmp_path), images_per_shard=3) == shards  # deterministic
    got = {}
    for s in shards:
        for b in iter_batches(s.source, ReadOptions(batch_rows=2), s.members):
            assert b.ids == [p.removesuffix(".png") for p in b.columns["path"]]
            got.update(zip(b.ids, b.samples, strict=True))
    assert sorted(got) == sorted(k.removesuffix(".png") for k in imgs)  # keys: paths without extension
    assert all(np.array_equal(got[k.removesuffix(".png")], imgs[k]) for k in imgs)


def test_corrupt_image_file_is_named(tmp_path):
    from pipeline.ledger.plan import plan_shards

    _image_folder(tmp_path, n=3)
    (tmp_path / "dogs" / "002.png").write_bytes(b"\x89PNG not really")
    (shard,) = plan_shards(str(tmp_path))
    with pytest.raises(InputError, match=r"dogs/002\.png: corrupt image bytes"):
        list(iter_batches(shard.source, ReadOptions(), shard.members))


def _tar(path, samples):
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_samples_fields_and_keys(tmp_path):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(5)]
    members = []
    for i, img in enumerate(imgs):
        members += [
            (f"part/{i:04d}.png", _png(img)),
            (f"part/{i:04d}.cls", str(i % 3).encode()),
            (f"part/{i:04d}.txt", f"caption {i}".encode()),
            (f"part/{i:04d}.seg.bin", bytes([i])),
        ]
    _tar(tmp_path / "shard-0.tar", members)
    batches, samples = _collect(str(tmp_path / "shard-0.tar"), batch_rows=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert all(np.array_equal(a, b) for a, b in zip(samples, imgs, strict=True))
    ids = [k for b in batches for k in b.ids]
    assert ids == [f"part/{i:04d}" for i in range(5)]
    cols = {k: [v for b in batches for v in b.columns[k]] for k in batches[0].columns}
    assert cols == {
        "cls": [0, 1, 2, 0, 1],
        "txt": [f"caption {i}" for i in range(5)],
        "seg.bin": [bytes([i]) for i in range(5)],
    }


def test_webdataset_npy_field_and_errors(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    _tar(tmp_path / "a.tar", [("k0.npy", buf.getvalue()), ("k1.cls", b"1")])
    with pytest.raises(InputError, match=r"a\.tar row 1: sample 'k1' has no image field"):
        _collect(str(tmp_path / "a.tar"))
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(data[:700])
    with pytest.raises(InputError, match=r"b\.tar: truncated or corrupt tar"):
        _collect(str(tmp_path / "b.tar"))
    _tar(tmp_path / "c.tar", [("k0.npy", buf.getvalue())])
    _, samples = _collect(str(tmp_path / "c.tar"))
    assert np.array_equal(samples[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    _tar(tmp_path / "d.tar", [("k0.cls", b"x"), ("k0.npy", buf.getvalue())])
    with pytest.raises(InputError, match=r"d\.tar row 0: field \.cls is not an integer"):
        _collect(str(tmp_path / "d.tar"))


def test_npz_metadata_arrays_beside_the_samples_are_skipped(tmp_path):
    from pipeline.data.readers import iter_batches

    np.savez(
        tmp_path / "m.npz",
        image=np.zeros((3, 8, 8), np.uint8),
        label=np.arange(3),
        date=np.array("2024-01-01"),
        unit=np.array(1.5),
        other=np.arange(7),
    )
    (batch,) = iter_batches(str(tmp_path / "m.npz"))
    assert len(batch) == 3 and batch.columns == {"label": [0, 1, 2]}


def _every_format(tmp_path):
    """Ten 3x4 RGB images, row i filled with i, in every format a shard can be."""
    import tarfile

    import pyarrow.ipc

    images = [np.full((3, 4, 3), i, np.uint8) for i in range(10)]
    pngs = []
    for x in images:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    np.save(tmp_path / "a.npy", np.stack(images))
    np.savez(tmp_path / "a.npz", x=np.stack(images), label=np.arange(10))
    table = pa.table({"image": pa.array(pngs, pa.binary()), "label": list(range(10))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    with pa.OSFile(str(tmp_path / "a.arrow"), "wb") as sink, pyarrow.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for i, data in enumerate(pngs):
            (folder / f"{i:02d}.png").write_bytes(data)
            info = tarfile.TarInfo(f"{i:02d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = tuple(str(folder / f"{i:02d}.png") for i in range(10))
    return {
        "npy": (str(tmp_path / "a.npy"), ()),
        "npz": (str(tmp_path / "a.npz"), ()),
        "parquet": (str(tmp_path / "a.parquet"), ()),
        "arrow": (str(tmp_path / "a.arrow"), ()),
        "webdataset": (str(tmp_path / "a.tar"), ()),
        "images": (str(folder), members),
    }


@pytest.mark.parametrize("fmt", ["npy", "npz", "parquet", "arrow", "webdataset", "images"])
def test_only_the_rows_asked_for_are_read_with_their_row_numbers(tmp_path, fmt):
    from pipeline.data.readers import count_rows
    from pipeline.ledger.shard import Shard
    from pipeline.workers.encode import spread_rows

    source, members = _every_format(tmp_path)[fmt]
    batches = list(iter_batches(source, ReadOptions(batch_rows=2, only_rows=(1, 4, 5, 9)), members))
    rows = [r for b in batches for r in b.rows]
    assert rows == [1, 4, 5, 9]
    assert [int(s.flat[0]) for b in batches for s in b.samples] == rows  # each row's own pixels
    if fmt in ("npz", "parquet", "arrow"):
        assert [v for b in batches for v in b.columns["label"]] == rows
    if fmt in ("images", "webdataset"):
        assert [i for b in batches for i in b.ids] == [f"{r:02d}" for r in rows]
    total = count_rows(source, members)
    assert total == (10 if fmt in ("npy", "parquet", "images") else None)
    spread = spread_rows(Shard(source, "a", "a.vz.parquet", members), 4)
    assert spread == ((0, 3, 6, 9) if total else None)
