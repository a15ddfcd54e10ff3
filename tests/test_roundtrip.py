"""Encode and decode through a real local Ray; exact round trips against the decoder itself."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs._cli import run_main
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.nets import MLPConfig, build_model
from tests.helpers import decode, direct_reconstructions, encode

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("local_ray")]


def test_digits_round_trip_is_exact_against_the_decoder(tmp_path, digits_dir, digits_ckpt, digits):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert decode(arch, digits_ckpt, rec) == 0
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["rows"] == 1797 and manifest["files"] == 4 and manifest["missing"] == 0
    import duckdb  # the manifest's table, one row per file, as DuckDB reads it

    listed = duckdb.sql(
        f"SELECT name, rows, bytes FROM '{arch}/_manifest/files.parquet' ORDER BY name"
    ).fetchall()
    assert listed == [
        (p.name, r, p.stat().st_size)
        for p, r in zip(sorted(arch.glob("*.vz.parquet")), (512, 512, 512, 261), strict=True)
    ]
    direct = direct_reconstructions(str(arch), digits_ckpt)
    keys, labels, recs = [], [], []
    for i in range(4):
        recs.append(np.load(rec / f"digits-{i:05d}.npy"))
        side = pq.read_table(rec / f"digits-{i:05d}.keys.parquet").to_pydict()
        keys += side["key"]
        labels += side["label"]
    recs = np.concatenate(recs)
    assert len(keys) == len(set(keys)) == 1797  # every key exactly once
    assert labels == digits[1].tolist()  # passthrough exactly, in order
    for k, r in zip(keys, recs, strict=True):
        assert np.array_equal(direct[k], r), k
    psnr = 10 * np.log10(255**2 / ((recs.astype(float) - digits[0]) ** 2).mean(axis=(1, 2)))
    assert psnr.mean() > 15
    from jobs import verify

    assert run_main(verify.main, ["--original", digits_dir, "--restored", str(rec)]) == 0


def test_photo_crops_round_trip_to_parquet_png(tmp_path, photos, photos_ckpt):
    from pipeline.data.readers.parquet import decode_image

    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(photos / "heldout", photos_ckpt, arch, "--quantizer", "affine") == 0
    assert decode(arch, photos_ckpt, rec, "--format", "parquet") == 0
    direct = direct_reconstructions(str(arch), photos_ckpt)
    src = pq.read_table(photos / "heldout").to_pydict()
    out = pa.concat_tables([pq.read_table(p) for p in sorted(rec.glob("heldout-*.parquet"))])
    out = out.to_pydict()
    assert out["photo"] == src["photo"] and out["top"] == src["top"]
    assert len(out["key"]) == len(set(out["key"])) == len(src["photo"])
    for key, img in zip(out["key"], out["image"], strict=True):
        assert np.array_equal(decode_image(img["bytes"], "x", 0), direct[key])


def test_verify_reads_every_decode_format_alike(tmp_path, photos, photos_ckpt, capsys):
    from jobs import verify

    arch = tmp_path / "arch"
    assert encode(photos / "heldout", photos_ckpt, arch) == 0
    lines = {}
    for fmt in ("npy", "parquet", "images", "webdataset"):
        assert decode(arch, photos_ckpt, tmp_path / fmt, "--format", fmt) == 0
        capsys.readouterr()
        args = [
            "--original",
            str(photos / "heldout"),
            "--restored",
            str(tmp_path / fmt),
            "--archive",
            str(arch),
        ]
        assert run_main(verify.main, args) == 0
        lines[fmt] = capsys.readouterr().out.splitlines()[0]
    assert len(set(lines.values())) == 1, lines  # the same rows, errors and peak from each
    assert "(peak 255, values 0..255)" in lines["npy"]
    args = [
        "--original",
        str(photos / "heldout"),
        "--restored",
        str(tmp_path / "npy"),
        "--archive",
        str(arch),
    ]
    assert run_main(verify.main, [*args, "--baseline", "--baseline-rows", "40"]) == 0
    out = capsys.readouterr().out
    target = float(re.search(r"at vaezip's mean PSNR of ([\d.]+) dB", out).group(1))
    table = {
        m[0].strip(): m for m in re.findall(r"^  (.{36}) (\S+(?: \d+)?) +([\d,]+) +[\d.]+ +(\S+)", out, re.M)
    }
    assert set(table) == {
        "vaezip (this archive)",
        "PNG",
        "JPEG per sample",
        "JPEG tiled",
        "WEBP per sample",
        "WEBP tiled",
    }
    assert table["PNG"][3] == "lossless"
    for codec in ("JPEG per sample", "JPEG tiled", "WEBP per sample", "WEBP tiled"):
        assert float(table[codec][3].rstrip("*")) >= target or table[codec][3].endswith("*")


def test_rerun_redoes_only_the_missing_shard(tmp_path, digits_dir, digits_ckpt):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    before = {p.name: p.read_bytes() for p in arch.glob("*.vz.parquet")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in arch.glob("*.vz.parquet")}
    (arch / "digits-00002.vz.parquet").unlink()
    assert encode(digits_dir, digits_ckpt, arch) == 0
    after = {p.name: p.stat().st_mtime_ns for p in arch.glob("*.vz.parquet")}
    redone = sorted(n for n in after if after[n] != mtimes.get(n))
    assert redone == ["digits-00002.vz.parquet"]
    assert (arch / "digits-00002.vz.parquet").read_bytes() == before["digits-00002.vz.parquet"]


def test_an_output_holding_another_jobs_archive_is_refused(tmp_path, digits_dir, digits_ckpt, capsys):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert encode(digits_dir, digits_ckpt, arch, "--bits", "6") == 2
    assert "already holds an archive of another job" in capsys.readouterr().err


def test_decode_refuses_another_checkpoint(tmp_path, digits_dir, digits_ckpt):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    other = str(tmp_path / "other")
    save_checkpoint(build_model(MLPConfig(input_dim=64, latent_dim=8, hidden_dims=(128,))), other)
    assert decode(arch, other, tmp_path / "rec") == 1
    failures = json.loads((tmp_path / "rec" / "failures.json").read_text())
    assert len(failures) == 4 and all("decode with the checkpoint" in f["error"] for f in failures)


@pytest.fixture(scope="module")
def crops(photos):
    from pipeline.data.readers import iter_batches, list_sources

    out = []
    for src in list_sources(str(photos / "heldout")):
        for b in iter_batches(src):
            out += [
                (f"{p}/{t:03d}_{le:03d}", x)
                for p, t, le, x in zip(
                    b.columns["photo"], b.columns["top"], b.columns["left"], b.samples, strict=True
                )
            ]
    return out[::10][:60]


def _png_bytes(x):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_to_images_and_webdataset(tmp_path, crops, photos_ckpt):
    import tarfile

    from pipeline.data.readers.images import decode_image

    src = tmp_path / "src"
    for name, x in crops:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.png").write_bytes(_png_bytes(x))
    arch = tmp_path / "arch"
    assert encode(src, photos_ckpt, arch, "--images-per-shard", "25") == 0
    assert sorted(p.name for p in arch.glob("*.vz.parquet")) == [
        f"images-{i:05d}.vz.parquet" for i in range(3)
    ]
    direct = direct_reconstructions(str(arch), photos_ckpt)
    assert sorted(direct) == sorted(n for n, _ in crops)  # keys: the source paths, no extension

    rec = tmp_path / "rec"
    assert decode(arch, photos_ckpt, rec, "--format", "images") == 0
    index = pa.concat_tables([pq.read_table(p) for p in sorted(rec.glob("*.index.parquet"))])
    index = index.to_pydict()
    assert sorted(index["key"]) == sorted(direct) and index["path"] == [f"{k}.png" for k in index["key"]]
    for key, file in zip(index["key"], index["file"], strict=True):
        assert file == f"{key}.png"  # cats/001 -> cats/001.png
        assert np.array_equal(decode_image((rec / file).read_bytes(), file, None), direct[key])

    wds = tmp_path / "wds"
    assert decode(arch, photos_ckpt, wds, "--format", "webdataset") == 0
    seen = {}
    for shard in sorted(wds.glob("*.tar")):
        with tarfile.open(shard) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in files.items():
            stem, field = name.split(".", 1)
            if field == "vzkey.txt":
                key = data.decode()
                assert files[f"{stem}.path.txt"].decode() == f"{key}.png"
                seen[key] = decode_image(files[f"{stem}.png"], name, None)
    assert sorted(seen) == sorted(direct)
    assert all(np.array_equal(seen[k], direct[k]) for k in direct)


def test_webdataset_in_and_out_keeps_keys_and_fields(tmp_path, crops, photos_ckpt):
    import io
    import tarfile

    from pipeline.data.readers import ReadOptions, iter_batches

    src = tmp_path / "src"
    src.mkdir()
    for part in range(2):
        with tarfile.open(src / f"part-{part}.tar", "w") as tar:
            for i, (name, x) in enumerate(crops[part * 30 : part * 30 + 30]):
                key = f"s{part}_{i:04d}"
                for field, data in (
                    ("png", _png_bytes(x)),
                    ("cls", str(i % 7).encode()),
                    ("txt", name.encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{field}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    arch, out = tmp_path / "arch", tmp_path / "out"
    assert encode(src, photos_ckpt, arch) == 0
    assert decode(arch, photos_ckpt, out, "--format", "webdataset") == 0
    direct = direct_reconstructions(str(arch), photos_ckpt)
    got = [b for p in sorted(out.glob("*.tar")) for b in iter_batches(str(p), ReadOptions())]
    keys = [k for b in got for k in b.ids]
    assert keys == [f"s{p}_{i:04d}" for p in range(2) for i in range(30)]
    assert [c for b in got for c in b.columns["cls"]] == [i % 7 for _ in range(2) for i in range(30)]
    assert [t for b in got for t in b.columns["txt"]] == [n for n, _ in crops]
    assert set(got[0].columns) == {"cls", "txt"}  # the vzkey.txt field is the key, not a column
    assert all(np.array_equal(x, direct[k]) for b in got for k, x in zip(b.ids, b.samples, strict=True))
