"""Downstream clients on their own: Hugging Face ``datasets`` and ``webdataset`` write the input,
vaezip archives and decodes it, and the same libraries read the result back, with every key,
field and pixel checked against the decoder run directly on the archive's codes."""

import io
import json
import urllib.parse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.codec.format import archive_files, read_keys
from pipeline.data.outputs import tar_key
from tests.helpers import decode, direct_reconstructions, encode

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]
ROWS = 48


@pytest.fixture(scope="module")
def crops(photos):
    """(names, images, photo of each): real 32x32 photo crops from the demo data."""
    table = pq.read_table(sorted((photos / "heldout").glob("*.parquet"))[0]).slice(0, ROWS)
    images = [np.asarray(Image.open(io.BytesIO(v["bytes"]))) for v in table["image"].to_pylist()]
    return sorted(set(table["photo"].to_pylist())), images, table["photo"].to_pylist()


@pytest.fixture(scope="module")
def hf_dataset(crops):
    names, images, photo = crops
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=names),
            "caption": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(x) for x in images],
            "label": [names.index(p) for p in photo],
            "caption": [f"a crop of {p}" for p in photo],
        },
        features=features,
    )


@pytest.fixture(scope="module")
def hf_archive(hf_dataset, photos_ckpt, tmp_path_factory):
    """The dataset written by ``Dataset.to_parquet``, archived, and decoded to Parquet and tars."""
    tmp = tmp_path_factory.mktemp("hf")
    (tmp / "src").mkdir()
    hf_dataset.to_parquet(str(tmp / "src" / "train-00000.parquet"))
    assert encode(tmp / "src", photos_ckpt, tmp / "arch") == 0
    for fmt in ("parquet", "webdataset"):
        assert decode(tmp / "arch", photos_ckpt, tmp / fmt, "--format", fmt) == 0
    return tmp


def test_a_datasets_parquet_round_trips_with_its_features(hf_dataset, hf_archive, photos_ckpt):
    arch, out = hf_archive / "arch", hf_archive / "parquet"
    (archive,) = archive_files(str(arch))
    assert archive.endswith("/train-00000.vz.parquet")  # not train-00000.parquet.vz.parquet
    # the archive itself opens in datasets with the source's label names
    raw = datasets.load_dataset("parquet", data_files=archive, split="train")
    assert raw.features["label"] == hf_dataset.features["label"]
    assert sorted(p.name for p in out.glob("*.parquet")) == ["train-00000.parquet"]

    restored = datasets.load_dataset("parquet", data_files=str(out / "train-00000.parquet"), split="train")
    assert isinstance(restored.features["image"], datasets.Image)
    assert restored.features["label"] == hf_dataset.features["label"]
    assert restored.features["caption"] == datasets.Value("string")
    expected = direct_reconstructions(str(arch), photos_ckpt)
    assert restored["key"] == [f"train-00000:{i}" for i in range(ROWS)] == list(expected)
    for row, original in zip(restored, hf_dataset, strict=True):
        assert isinstance(row["image"], Image.Image)
        assert np.array_equal(np.asarray(row["image"]), expected[row["key"]])
        assert (row["label"], row["caption"]) == (original["label"], original["caption"])


def test_decoded_tars_give_every_field_its_type_in_webdataset(hf_dataset, hf_archive, photos_ckpt):
    expected = direct_reconstructions(str(hf_archive / "arch"), photos_ckpt)
    (tar,) = (hf_archive / "webdataset").glob("*.tar")
    assert tar.name == "train-00000.tar"
    samples = list(wds.WebDataset(str(tar), shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"train-00000:{i}" for i in range(ROWS)]
    for s, original in zip(samples, hf_dataset, strict=True):
        assert {f for f in s if not f.startswith("__")} == {"png", "vzkey.txt", "label.cls", "caption.txt"}
        assert np.array_equal(s["png"], expected[s["vzkey.txt"]])
        assert (s["label.cls"], s["caption.txt"]) == (original["label"], original["caption"])


def test_the_readme_downstream_snippets_run(hf_archive, hf_dataset):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippets = dict(re.findall(r"```python\n# downstream: (\w+)\n(.*?)```", readme, flags=re.S))
    assert set(snippets) == {"datasets", "webdataset"}
    scope: dict = {}
    exec(snippets["datasets"].replace("runs/photos-parquet", str(hf_archive / "parquet")), scope)
    assert scope["ds"].features["label"] == hf_dataset.features["label"]
    assert [x.size for x in scope["images"]] == [(32, 32)] * ROWS
    scope = {}
    exec(snippets["webdataset"].replace("runs/photos-tars", str(hf_archive / "webdataset")), scope)
    assert scope["keys"] == [f"train-00000:{i}" for i in range(ROWS)]


def test_a_datasets_save_to_disk_is_read_as_input(hf_dataset, photos_ckpt, tmp_path):
    hf_dataset.save_to_disk(str(tmp_path / "saved"))
    (arrow,) = (tmp_path / "saved").glob("*.arrow")
    assert encode(tmp_path / "saved", photos_ckpt, tmp_path / "arch") == 0
    (archive,) = archive_files(str(tmp_path / "arch"))
    stem = arrow.name[: -len(".arrow")]
    assert archive.endswith(f"/{stem}.vz.parquet")
    assert read_keys(archive) == [f"{stem}:{i}" for i in range(ROWS)]
    table = pq.read_table(archive, columns=["label", "caption"])
    assert table["label"].to_pylist() == hf_dataset["label"]
    assert table["caption"].to_pylist() == hf_dataset["caption"]
    restored = datasets.load_dataset("parquet", data_files=archive, split="train")
    assert restored.features["label"] == hf_dataset.features["label"]


def _img2dataset_layout(folder, images, captions):
    """Two shards as img2dataset writes them: NNNNN.tar of .jpg/.json/.txt per sample (written
    with webdataset's own TarWriter), beside an NNNNN.parquet index and NNNNN_stats.json."""
    folder.mkdir()
    half = len(images) // 2
    for shard, rows in enumerate((range(half), range(half, len(images)))):
        index = []
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as sink:
            for i in rows:
                key = f"{shard:05d}{i:04d}"
                meta = {"url": f"https://example.com/{i}.jpg", "key": key, "status": "success"}
                buf = io.BytesIO()
                Image.fromarray(images[i]).save(buf, format="JPEG", quality=95)
                sink.write({"__key__": key, "jpg": buf.getvalue(), "json": meta, "txt": captions[i]})
                index.append({**meta, "caption": captions[i], "error_message": None})
        index.append({"url": "https://example.com/gone.jpg", "key": None, "status": "failed_to_download"})
        pq.write_table(pa.Table.from_pylist(index), folder / f"{shard:05d}.parquet")
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(rows) + 1}))


def test_webdataset_tars_round_trip_through_the_webdataset_library(crops, photos_ckpt, tmp_path):
    _, images, photo = crops
    captions = [f"a crop of {p}" for p in photo]
    _img2dataset_layout(tmp_path / "src", images, captions)
    arch, out = tmp_path / "arch", tmp_path / "out"
    assert encode(tmp_path / "src", photos_ckpt, arch) == 0
    assert [f.rsplit("/", 1)[1] for f in archive_files(str(arch))] == ["00000.vz.parquet", "00001.vz.parquet"]
    assert decode(arch, photos_ckpt, out, "--format", "webdataset") == 0
    tars = sorted(str(p) for p in out.glob("*.tar"))
    assert [t.rsplit("/", 1)[1] for t in tars] == ["00000.tar", "00001.tar"]

    expected = direct_reconstructions(str(arch), photos_ckpt)
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"{i // (ROWS // 2):05d}{i:04d}" for i in range(ROWS)]
    for i, s in enumerate(samples):
        assert {f for f in s if not f.startswith("__")} == {"png", "vzkey.txt", "json", "txt"}
        assert s["vzkey.txt"] == s["__key__"]
        assert np.array_equal(s["png"], expected[s["__key__"]])
        assert s["txt"] == captions[i]
        assert s["json"]["key"] == s["__key__"] and s["json"]["status"] == "success"


def test_keys_map_to_webdataset_keys_and_back():
    for key in ("heldout-00000:17", "cats/001.jpg", "a.b.c", "100%", "/abs", "x//y/", "..", "a\\b"):
        k = tar_key(key)
        assert urllib.parse.unquote(k) == key
        base = k.rsplit("/", 1)[-1]
        assert "." not in base and not k.startswith("/") and "//" not in k and not k.endswith("/")
    assert tar_key("heldout-00000:17") == "heldout-00000:17"
    assert tar_key("cats/001.jpg") == "cats/001%2Ejpg"


def test_decoded_tars_keep_their_keys_when_archived_again(crops, photos_ckpt, tmp_path):
    """Sample keys with dots and folders: the tar keys are escaped, the archive key travels in
    vzkey.txt, and a decoded tar archived again has the original keys."""
    _, images, _ = crops
    src = tmp_path / "src"
    (src / "cats").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(images[i]).save(src / "cats" / f"c.{i}.png")
    arch, out = tmp_path / "arch", tmp_path / "out"
    assert encode(src, photos_ckpt, arch) == 0
    assert decode(arch, photos_ckpt, out, "--format", "webdataset") == 0
    samples = list(wds.WebDataset(str(out / "images-00000.tar"), shardshuffle=False).decode("rgb8"))
    keys = [f"cats/c.{i}" for i in range(4)]  # the files' paths without .png
    assert [s["vzkey.txt"] for s in samples] == keys
    assert [s["__key__"] for s in samples] == [f"cats/c%2E{i}" for i in range(4)]
    assert [s["path.txt"] for s in samples] == [f"{k}.png" for k in keys]
    assert encode(out, photos_ckpt, tmp_path / "again") == 0
    (again,) = archive_files(str(tmp_path / "again"))
    assert read_keys(again) == keys
