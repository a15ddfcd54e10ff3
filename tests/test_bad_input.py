"""The bad-input catalogue: each kind of bad input gives one clear error that names the file
(and the row where there is one), the bad shard is listed in failures.json, every other shard
is finished, and ``--max-failed-shards`` decides the exit code. Real local Ray throughout.
"""

import io
import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.names import output_name
from tests.helpers import decode, encode

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("local_ray")]


def error_line(err: str) -> str:
    """The job's one error line. Ray may stream earlier workers' log lines into the same
    stderr, so the test looks for the line rather than counting all of stderr's lines."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def tar(path, members) -> None:
    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def table(images, labels, **extra) -> pa.Table:
    return pa.table(
        {
            "image": [png(x) for x in images],
            "label": labels.tolist(),
            "id": [f"d{i}" for i in range(len(labels))],
            **extra,
        }
    )


# Each case writes two good shards and one bad one (sorted last) in one format, and returns
# (extra encode arguments, the bad shard's archive name, a regex its error must match).


def npy_truncated(d, x, y):
    np.save(d / "b.npy", x[:40])
    (d / "b.npy").write_bytes((d / "b.npy").read_bytes()[:-100])
    return [], "b.npy", r"b\.npy row \d+: file is truncated: header says 40 rows"


def npy_object(d, x, y):
    np.save(d / "b.npy", np.array([x[0], "text"], dtype=object), allow_pickle=True)
    return [], "b.npy", r"b\.npy: object arrays are refused"


def npy_int_out_of_range(d, x, y):
    np.save(d / "b.npy", x[:10].astype(np.int32) * 100)
    return [], "b.npy", r"b\.npy row \d+: int32 values 0\.\.25500 lie outside the value range 0\.\.255"


def npy_wrong_dtype(d, x, y):
    np.save(d / "b.npy", x[:10].astype(np.complex64))
    return [], "b.npy", r"b\.npy row 0: dtype complex64 is not supported"


def npy_wrong_shape(d, x, y):
    np.save(d / "b.npy", np.zeros((10, 9, 9), np.uint8))
    return [], "b.npy", r"b\.npy row 0: sample has 81 values, the model takes 64"


def npy_nan(d, x, y):
    bad = x[:10].astype(np.float32) / 255
    bad[7, 3, 3] = np.nan
    np.save(d / "b.npy", bad)
    return [], "b.npy", r"b\.npy row 7: sample holds NaN or infinity"


def npy_infinity(d, x, y):
    bad = x[:10].astype(np.float32) / 255
    bad[4, 0, 0] = np.inf
    np.save(d / "b.npy", bad)
    return [], "b.npy", r"b\.npy row 4: sample holds NaN or infinity"


def npy_empty(d, x, y):
    np.save(d / "b.npy", x[:0])
    return [], "b.npy", r"b\.npy: shard holds no rows"


def npy_not_an_array(d, x, y):
    (d / "b.npy").write_bytes(b"PK\x03\x04 this is not an array")
    return [], "b.npy", r"b\.npy: not a readable \.npy array"


def npz_corrupt_zip(d, x, y):
    np.savez(d / "b.npz", image=x[:50], label=y[:50])
    (d / "b.npz").write_bytes((d / "b.npz").read_bytes()[:300])
    return [], "b.npz", r"b\.npz: (not a readable \.npz archive|corrupt \.npz)"


def npz_which_array(d, x, y):
    np.savez(d / "b.npz", pixels=x[:5], more=x[:5])
    return [], "b.npz", r"b\.npz: .*(array|--array-key)"


def parquet_corrupt_image(d, x, y):
    t = table(x[:10], y[:10]).to_pydict()
    t["image"][3] = t["image"][3][:30]
    pq.write_table(pa.table(t), d / "b.parquet")
    return [], "b.parquet", r"b\.parquet row 3: corrupt image bytes"


def parquet_null_image(d, x, y):
    t = table(x[:10], y[:10]).to_pydict()
    t["image"][2] = None
    pq.write_table(pa.table(t), d / "b.parquet")
    return [], "b.parquet", r"b\.parquet row 2: sample is null"


def parquet_image_path_missing(d, x, y):
    t = table(x[:10], y[:10]).to_pydict()
    t["image"] = [{"bytes": b, "path": None} for b in t["image"]]
    t["image"][4] = {"bytes": None, "path": "gone.png"}  # Dataset.to_parquet of a file's image
    pq.write_table(pa.table(t), d / "b.parquet")
    return (
        [],
        "b.parquet",
        r"b\.parquet row 4: image struct has no bytes and its path .*gone\.png cannot be read",
    )


def parquet_missing_column(d, x, y):
    pq.write_table(table(x[:10], y[:10]).rename_columns(["picture", "label", "id"]), d / "b.parquet")
    return ["--column", "image"], "b.parquet", r"b\.parquet: missing column 'image'"


def parquet_not_parquet(d, x, y):
    (d / "b.parquet").write_bytes(b"PAR1 but nothing else of a Parquet file")
    return [], "b.parquet", r"b\.parquet: not a readable Parquet file"


def parquet_truncated(d, x, y):
    pq.write_table(table(x[:50], y[:50]), d / "b.parquet")
    (d / "b.parquet").write_bytes((d / "b.parquet").read_bytes()[:-200])
    return [], "b.parquet", r"b\.parquet: not a readable Parquet file"


def parquet_duplicate_keys(d, x, y):
    t = table(x[:10], y[:10]).to_pydict()
    t["id"][6] = t["id"][2]
    pq.write_table(pa.table(t), d / "b.parquet")
    return ["--key-column", "id"], "b.parquet", r"b\.parquet row 6: duplicate key 'd2'"


def parquet_missing_key_column(d, x, y):
    pq.write_table(table(x[:10], y[:10]).drop_columns(["id"]), d / "b.parquet")
    return ["--key-column", "id"], "b.parquet", r"b\.parquet: missing key column 'id'"


def parquet_reserved_column(d, x, y):
    pq.write_table(table(x[:10], y[:10], vz_key=[str(i) for i in range(10)]), d / "b.parquet")
    return [], "b.parquet", r"b\.parquet.*reserved prefix 'vz_'"


def parquet_ragged_tensor(d, x, y):
    rows = [x[i].tolist() for i in range(5)]
    rows[1] = [[1, 2], [3]]
    pq.write_table(pa.table({"pixels": rows}), d / "b.parquet")
    return ["--column", "pixels"], "b.parquet", r"b\.parquet row 1: ragged tensor"


def parquet_16bit_image(d, x, y):
    t = table(x[:10], y[:10]).to_pydict()
    t["image"][5] = png(x[5].astype(np.uint16) * 4000)
    pq.write_table(pa.table(t), d / "b.parquet")
    return [], "b.parquet", r"b\.parquet row 5: unsupported image mode"


def tar_truncated(d, x, y):
    tar(d / "b.tar", [(f"s{i:03d}.png", png(x[i])) for i in range(20)])
    (d / "b.tar").write_bytes((d / "b.tar").read_bytes()[:3000])
    return [], "b.tar", r"b\.tar: truncated or corrupt tar"


def tar_sample_without_image(d, x, y):
    tar(d / "b.tar", [("s000.png", png(x[0])), ("s000.cls", b"1"), ("s001.cls", b"2")])
    return [], "b.tar", r"b\.tar row 1: sample 's001' has no image field"


def tar_bad_class(d, x, y):
    tar(d / "b.tar", [("s000.png", png(x[0])), ("s000.cls", b"seven")])
    return [], "b.tar", r"b\.tar row 0: field \.cls is not an integer"


def image_file_corrupt(d, x, y):
    (d / "b").mkdir()
    (d / "b" / "bad.png").write_bytes(png(x[0])[:40])
    return ["--images-per-shard", "5"], "images-00002", r"b/bad\.png: corrupt image bytes"


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb:
    45 bytes that claim 2.5 billion pixels)."""
    import struct
    import zlib

    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def parquet_png_bomb(d, x, y):
    t = table(x[:10], y[:10])
    images = t["image"].to_pylist()
    images[4] = png_declaring(50000, 50000)
    pq.write_table(t.set_column(0, "image", pa.array(images, pa.binary())), d / "b.parquet")
    return [], "b.parquet", r"b\.parquet row 4: image (of 50000x50000 pixels )?is over the limit"


def image_file_too_large(d, x, y):
    (d / "b").mkdir()
    (d / "b" / "big.png").write_bytes(png_declaring(12000, 12000))
    return ["--images-per-shard", "5"], "images-00002", r"b/big\.png: image of 12000x12000 pixels"


def tar_member_too_large(d, x, y):
    with tarfile.open(d / "b.tar", "w") as t:
        info = tarfile.TarInfo("k_000.npy")
        info.size = 16 << 30  # the header claims 16 GB; nothing follows
        t.addfile(info)
    return [], "b.tar", r"b\.tar: member 'k_000\.npy' declares 17,179,869,184 bytes, over the limit"


def parquet_nul_key(d, x, y):
    ids = [f"d{i}" for i in range(10)]
    ids[6] = "d\x006"
    pq.write_table(table(x[:10], y[:10]).set_column(2, "id", pa.array(ids)), d / "b.parquet")
    return ["--key-column", "id"], "b.parquet", r"b\.parquet row 6: key 'd\\x006' holds a NUL character"


GOOD = {
    "npy": lambda d, x, y, i: np.save(d / f"a{i}.npy", x),
    "npz": lambda d, x, y, i: np.savez(d / f"a{i}.npz", image=x, label=y),
    "parquet": lambda d, x, y, i: pq.write_table(table(x, y), d / f"a{i}.parquet"),
    "tar": lambda d, x, y, i: tar(
        d / f"a{i}.tar",
        [
            (f"k{i}_{j:03d}.{f}", v)
            for j in range(len(x))
            for f, v in (("png", png(x[j])), ("cls", str(y[j]).encode()))
        ],
    ),
    "images": lambda d, x, y, i: [(d / "a" / f"{i}_{j}.png").write_bytes(png(x[j])) for j in range(len(x))],
}

# One encode job a group: the cases of one format and one set of extra arguments, each bad
# shard renamed after its case, beside the two good shards (a job costs seconds to start).
GROUPS = {
    "npy": [
        npy_truncated,
        npy_object,
        npy_int_out_of_range,
        npy_wrong_dtype,
        npy_wrong_shape,
        npy_nan,
        npy_infinity,
        npy_empty,
        npy_not_an_array,
    ],
    "npz": [npz_corrupt_zip, npz_which_array],
    "parquet": [
        parquet_corrupt_image,
        parquet_null_image,
        parquet_image_path_missing,
        parquet_not_parquet,
        parquet_truncated,
        parquet_reserved_column,
        parquet_16bit_image,
        parquet_png_bomb,
    ],
    "parquet_key_column": [parquet_duplicate_keys, parquet_missing_key_column, parquet_nul_key],
    "parquet_column": [parquet_missing_column],
    "parquet_tensor_column": [parquet_ragged_tensor],
    "tar": [tar_truncated, tar_sample_without_image, tar_bad_class, tar_member_too_large],
    "image_file_corrupt": [image_file_corrupt],  # an image folder's shards are named by number:
    "image_file_too_large": [image_file_too_large],  # one bad folder a job
}


def _format(group: str) -> str:
    return "images" if group.startswith("image_file") else group.split("_")[0]


def _bad_shard(case, data, x, y, scratch):
    """Write ``case``'s bad shard into ``data``, named after the case where it is a file:
    (extra arguments, the shard's name, a regex its error must match)."""
    if _format(case.__name__) == "images":
        return case(data, x, y)
    scratch.mkdir()
    extra, bad, pattern = case(scratch, x, y)
    ext = bad.split(".", 1)[1]
    (scratch / bad).rename(data / f"{case.__name__}.{ext}")
    return extra, f"{case.__name__}.{ext}", pattern.replace(r"b\.", re.escape(case.__name__) + r"\.", 1)


@pytest.mark.parametrize("group", list(GROUPS))
def test_bad_input_fails_its_shard_only(group, tmp_path, digits, digits_ckpt):
    x, y = digits
    data = tmp_path / "data"
    data.mkdir()
    fmt = _format(group)
    if fmt == "images":
        (data / "a").mkdir()
    n = 5 if fmt == "images" else 60
    for i in range(2):
        GOOD[fmt](data, x[i * n : (i + 1) * n], y[i * n : (i + 1) * n], i)
        if group == "parquet_tensor_column":  # the good shards need a tensor column too
            pq.write_table(
                pa.table({"pixels": [r.tolist() for r in x[i * n : (i + 1) * n]]}), data / f"a{i}.parquet"
            )
    expected, extras = {}, set()
    for case in GROUPS[group]:
        extra, bad, pattern = _bad_shard(case, data, x[200:], y[200:], tmp_path / case.__name__)
        expected[output_name(bad)] = pattern
        extras.add(tuple(extra))
    assert len(extras) == 1, extras  # a group's cases share their arguments
    extra = list(extras.pop())
    arch = tmp_path / "arch"
    assert encode(data, digits_ckpt, arch, *extra) == 1
    failures = {f["shard"]: f for f in json.loads((arch / "failures.json").read_text())}
    assert sorted(failures) == sorted(expected)
    for name, pattern in expected.items():
        assert failures[name]["attempts"] == 1  # corrupt input: not retried
        assert re.search(pattern, failures[name]["error"]), failures[name]["error"]
    done = sorted(p.name for p in (arch / "_done").iterdir())
    assert len(done) == 2 and not {f"{name}.json" for name in expected} & set(done)
    assert not (arch / "manifest.json").exists()
    if group == "npy":  # once, not per group: --max-failed-shards decides the exit code
        before = {p.name: p.stat().st_mtime_ns for p in arch.glob("*.vz.parquet")}
        allowed = str(len(expected))
        assert encode(data, digits_ckpt, arch, *extra, "--max-failed-shards", allowed) == 0
        assert {p.name: p.stat().st_mtime_ns for p in arch.glob("*.vz.parquet")} == before  # not redone


@pytest.fixture(scope="module")
def archive(tmp_path_factory, digits, digits_ckpt):
    x, y = digits
    data = tmp_path_factory.mktemp("data")
    for i in range(3):
        np.savez(data / f"p{i}.npz", image=x[i * 100 : (i + 1) * 100], label=y[i * 100 : (i + 1) * 100])
    arch = tmp_path_factory.mktemp("arch")
    assert encode(data, digits_ckpt, arch) == 0
    return arch


def _rewrite_meta(path, change) -> None:
    pf = pq.ParquetFile(path)
    meta = json.loads(pf.schema_arrow.metadata[b"vaezip"])
    change(meta)
    t = pf.read()
    pq.write_table(t.replace_schema_metadata({b"vaezip": json.dumps(meta).encode()}), path)


def flipped_code_byte(path):
    """A code byte changed before the page was written (bad memory, a bad copy)."""
    pf = pq.ParquetFile(path)
    t = pf.read()
    codes = t["vz_codes"].to_pylist()
    codes[5] = bytes([codes[5][0] ^ 0x5A]) + codes[5][1:]
    t = t.set_column(t.schema.get_field_index("vz_codes"), "vz_codes", pa.array(codes, pa.binary()))
    pq.write_table(t.replace_schema_metadata(pf.schema_arrow.metadata), path)
    return r"p1\.vz\.parquet row 5: checksum mismatch"


def flipped_byte_on_disk(path):
    """A byte of the stored codes column chunk flipped on disk (bit rot)."""
    md = pq.ParquetFile(path).metadata
    chunk = md.row_group(0).column(pq.ParquetFile(path).schema_arrow.get_field_index("vz_codes"))
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    return r"p1\.vz\.parquet row 0: corrupt Parquet data \(.*(CRC|checksum)"


def truncated_archive(path):
    path.write_bytes(path.read_bytes()[:-300])
    return r"p1\.vz\.parquet: not a readable Parquet archive"


def unknown_version(path):
    _rewrite_meta(path, lambda m: m.update(format_version=99))
    return r"p1\.vz\.parquet: unknown archive format version 99"


def quantizer_mismatch(path):
    def drop_channel(m):
        if m["quantizer"]["active"][-1] and m["codec"].get("centers"):  # consistent, but not with the rows
            m["codec"]["centers"] = m["codec"]["centers"][:-1]
        for k in ("lo", "step", "levels", "active"):
            m["quantizer"][k] = m["quantizer"][k][:-1]

    _rewrite_meta(path, drop_channel)
    return r"p1\.vz\.parquet row 0: latent shape .* does not fit the quantizer"


def metadata_not_json(path):
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({b"vaezip": b"{not json"}), path)
    return r"p1\.vz\.parquet: archive metadata is not valid JSON"


def metadata_bad_types(path):
    _rewrite_meta(path, lambda m: m["quantizer"].update(levels="many"))
    return r"p1\.vz\.parquet: bad archive metadata"


def bad_stored_dtype(path):
    t = pq.read_table(path)
    dtypes = t["vz_dtype"].to_pylist()
    dtypes[2] = "object"
    t = t.set_column(t.schema.get_field_index("vz_dtype"), "vz_dtype", pa.array(dtypes))
    pq.write_table(t, path)
    return r"p1\.vz\.parquet row 2: unknown sample dtype 'object'"


def not_an_archive(path):
    pq.write_table(pa.table({"x": [1, 2]}), path)
    return r"p1\.vz\.parquet: not a vaezip archive"


DAMAGE = [
    flipped_code_byte,
    flipped_byte_on_disk,
    truncated_archive,
    unknown_version,
    quantizer_mismatch,
    metadata_not_json,
    metadata_bad_types,
    bad_stored_dtype,
    not_an_archive,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damaged_archive_fails_its_shard_only(damage, tmp_path, archive, digits_ckpt):
    arch = tmp_path / "arch"
    arch.mkdir()
    for p in [*archive.glob("*.vz.parquet"), archive / "manifest.json", *archive.glob("_manifest/*")]:
        (arch / p.relative_to(archive)).parent.mkdir(exist_ok=True)
        (arch / p.relative_to(archive)).write_bytes(p.read_bytes())
    pattern = damage(arch / "p1.vz.parquet")
    assert_p1_fails_alone(arch, tmp_path / "rec", digits_ckpt, pattern)


def assert_p1_fails_alone(arch, rec, ckpt, pattern: str) -> None:
    """Decode: p1 fails once with ``pattern``; p0 and p2 are restored; nothing half-written."""
    assert decode(arch, ckpt, rec) == 1
    failures = json.loads((rec / "failures.json").read_text())
    assert [f["shard"] for f in failures] == ["p1.npy"] and failures[0]["attempts"] == 1
    assert re.search(pattern, failures[0]["error"]), failures[0]["error"]
    assert sorted(p.name for p in rec.glob("*.npy")) == ["p0.npy", "p2.npy"]
    assert not list(rec.glob(".*.tmp"))


def test_tampered_checkpoint_is_refused(tmp_path, archive, digits_ckpt, capsys):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(digits_ckpt, ckpt)
    weights = bytearray((ckpt / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(weights))
    assert decode(archive, str(ckpt), tmp_path / "rec") == 2
    assert "model.safetensors: sha256" in error_line(capsys.readouterr().err)


def test_missing_input_is_one_clear_error(tmp_path, digits_ckpt, capsys):
    assert encode(tmp_path / "nothing-here", digits_ckpt, tmp_path / "arch") == 2
    err = error_line(capsys.readouterr().err)
    assert "nothing-here: no such file, folder or bucket" in err


def test_no_readable_shard_is_one_clear_error(tmp_path, digits_ckpt, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        np.save(data / f"x{i}.npy", np.zeros((4, 3, 3), np.uint8))
    assert encode(data, digits_ckpt, tmp_path / "arch") == 2
    err = error_line(capsys.readouterr().err)
    # refused before Ray starts: the first sample of every shard checked fails the same way
    assert "the input does not fit the checkpoint" in err
    assert "x0.npy row 0: sample has 9 values, the model takes 64" in err


def test_input_errors_cross_processes_intact():
    import pickle

    from pipeline.core.errors import InputError

    err = pickle.loads(pickle.dumps(InputError("s3://b/x.npy", "truncated", row=7, retryable=True)))
    assert (err.uri, err.reason, err.row, err.retryable) == ("s3://b/x.npy", "truncated", 7, True)
    assert str(err) == "s3://b/x.npy row 7: truncated"


def _replace_row(path, column: str, row: int, value, type_) -> None:
    pf = pq.ParquetFile(path)
    t = pf.read()
    values = t[column].to_pylist()
    values[row] = value
    t = t.set_column(t.schema.get_field_index(column), column, pa.array(values, type_))
    pq.write_table(t.replace_schema_metadata(pf.schema_arrow.metadata), path)


@pytest.mark.parametrize("bomb", ["frame", "latent_shape"])
def test_decode_bombs_are_refused_before_allocating(bomb, tmp_path, digits, digits_ckpt):
    """A row's zstd frame that declares far more than its latent shape holds, or a latent shape
    that claims gigabytes: refused from the headers, the row named, the other shards finished."""
    import zstandard

    x, y = digits
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        np.savez(data / f"p{i}.npz", image=x[i * 50 : (i + 1) * 50], label=y[i * 50 : (i + 1) * 50])
    arch = tmp_path / "arch"
    assert encode(data, digits_ckpt, arch, "--framing", "row") == 0
    victim = arch / "p1.vz.parquet"
    if bomb == "frame":  # 1 MiB of zeros compresses to a few dozen bytes
        frame = zstandard.ZstdCompressor().compress(bytes(1 << 20))
        _replace_row(victim, "vz_codes", 5, frame, pa.binary())
        pattern = r"p1\.vz\.parquet row 5: codes do not decompress \(the frame declares 1,048,576 bytes"
    else:
        _replace_row(victim, "vz_latent_shape", 5, [8, 1 << 20, 1 << 20], pa.list_(pa.int32()))
        pattern = r"p1\.vz\.parquet row 5: latent shape .* claims [\d,]+ bytes of codes, over the limit"
    assert_p1_fails_alone(arch, tmp_path / "rec", digits_ckpt, pattern)


def test_inspect_of_a_damaged_page_is_one_line(tmp_path, archive, capsys):
    from jobs import inspect as inspect_job
    from jobs._cli import run_main

    arch = tmp_path / "arch"
    arch.mkdir()
    for p in [*archive.glob("*.vz.parquet"), archive / "manifest.json", *archive.glob("_manifest/*")]:
        (arch / p.relative_to(archive)).parent.mkdir(exist_ok=True)
        (arch / p.relative_to(archive)).write_bytes(p.read_bytes())
    path = arch / "p1.vz.parquet"
    md = pq.ParquetFile(path).metadata  # a page inspect reads: the latent shapes
    chunk = md.row_group(0).column(pq.ParquetFile(path).schema_arrow.get_field_index("vz_latent_shape"))
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    assert run_main(inspect_job.main, [str(arch)]) == 2
    assert "p1.vz.parquet: damaged archive file" in error_line(capsys.readouterr().err)
    flipped_byte_on_disk(archive_copy := arch / "p0.vz.parquet")  # a page it does not read
    path.write_bytes((archive / "p1.vz.parquet").read_bytes())
    assert run_main(inspect_job.main, [str(arch)]) == 1  # the sha256 check still finds it
    assert f"{archive_copy}: sha256 does not match" in capsys.readouterr().out


def test_a_key_too_long_for_a_file_name_fails_its_shard_once(tmp_path, digits, digits_ckpt):
    x, y = digits
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        ids = [f"k{i}-{j}" for j in range(10)]
        if i == 1:
            ids[3] = "k" * 300  # a valid key, but no file system takes it as a name
        pq.write_table(table(x[:10], y[:10]).set_column(2, "id", pa.array(ids)), data / f"p{i}.parquet")
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(data, digits_ckpt, arch, "--key-column", "id") == 0
    assert decode(arch, digits_ckpt, rec, "--format", "images") == 1
    failures = json.loads((rec / "failures.json").read_text())
    assert [f["shard"] for f in failures] == ["p1.index.parquet"] and failures[0]["attempts"] == 1
    assert re.search(r"p1\.index\.parquet row 3: key 'k+' cannot be a file name", failures[0]["error"])
    assert (rec / "k0-0.png").exists() and (rec / "p0.index.parquet").exists()  # the good shard
    assert not [p.name for p in rec.glob("k1-*")]  # none of the failed shard's images under final names
    assert not list(rec.glob(".*.vz-staging"))  # nor any staging left
