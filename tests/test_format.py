"""The format, as a third party reads it: FORMAT.md's decoder and DuckDB."""

import base64
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.codec.codec import (
    FRAMINGS,
    Codec,
    CodecConfig,
    CodecParams,
    checksum,
    fold,
    row_bytes,
    rows_to_codes,
)
from pipeline.codec.compress import decompress
from pipeline.codec.format import ArchiveMeta, read_meta
from pipeline.codec.quantize import QuantizerConfig, QuantizerParams, dequantize, quantize
from pipeline.core.errors import InputError
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_shards
from pipeline.workers.encode import EncodeSpec, EncodeWorker
from tests.format_reader import read_archive_codes
from tests.helpers import vaezip_latents


@pytest.fixture(scope="module", params=FRAMINGS)
def archive(request, tmp_path_factory, digits_dir, trained_mlp):
    """One archive written by the worker itself, without Ray, in each framing."""
    from pipeline.model.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("fmt")
    save_checkpoint(trained_mlp[0], str(root / "ckpt"))
    worker = EncodeWorker(EncodeSpec(checkpoint=str(root / "ckpt"), output=str(root / "arch")))
    shards = plan_shards(digits_dir)
    q, c = worker.calibrate(shards, 512, QuantizerConfig(), CodecConfig(framing=request.param))
    assert c.framing == request.param
    job = JobParams(q, c, "job")
    for s in shards:
        assert worker.process(s, job).ok
    return root / "arch"


def test_format_md_decoder_matches_vaezip(archive):
    path = str(next(archive.glob("*.vz.parquet")))
    meta = read_meta(path)
    assert meta.codec.transform == "fold" and len(meta.codec.centers) == sum(meta.quantizer.active)
    theirs = read_archive_codes(path)
    table, ours = vaezip_latents(path)
    assert [r["key"] for r in theirs] == table["vz_key"]
    for t, o in zip(theirs, ours, strict=True):
        assert np.array_equal(t["latent"], o)


def test_codes_column_is_compressed_by_parquet_only_in_column_framing(archive):
    path = str(next(archive.glob("*.vz.parquet")))
    meta = read_meta(path)
    md = pq.ParquetFile(path).metadata
    col = pq.ParquetFile(path).schema_arrow.get_field_index("vz_codes")
    chunk = md.row_group(0).column(col)
    raw = pq.read_table(path)["vz_codes"].to_pylist()
    active = meta.quantizer.active.count(True)  # one position per MLP latent
    if meta.codec.framing == "column":
        assert chunk.compression == "ZSTD" and {len(r) for r in raw} == {active}
        assert not meta.codec.dictionary
    else:
        assert chunk.compression == "UNCOMPRESSED"
        assert all(r[:4] == b"\x28\xb5\x2f\xfd" for r in raw)  # zstd frame magic


def test_duckdb_queries_the_archive(archive, digits):
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT label, count(*) FROM read_parquet('{archive}/*.vz.parquet') GROUP BY label ORDER BY label"
    ).fetchall()
    assert rows == [(d, int((digits[1] == d).sum())) for d in range(10)]


def test_codes_round_trip_exactly_in_both_layouts():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16):
        codes = rng.integers(0, np.iinfo(dtype).max, (5, 3, 7), dtype=dtype)
        for layout in ("channel", "position"):
            for centers in ((), (0, np.iinfo(dtype).max, 3)):
                rows = row_bytes(codes, layout, centers)
                codec = Codec(CodecParams(level=3, layout=layout, centers=centers))
                back = [codec.decompress(f) for f in codec.compress(rows)]
                assert back == rows
                got = rows_to_codes(back, (3, 7), np.dtype(dtype), layout, centers)
                assert np.array_equal(got, codes)


def test_fold_is_a_bijection_that_puts_each_center_first():
    values = np.arange(256, dtype=np.uint8)[None, None, :]
    for m in range(256):
        folded = fold(values, [m])
        assert sorted(folded.ravel().tolist()) == list(range(256))
        assert folded[0, 0, m] == 0 and np.array_equal(fold(folded, [m], inverse=True), values)
        if 0 < m < 255:
            assert folded[0, 0, m + 1] == 1 and folded[0, 0, m - 1] == 2


def test_quantizer_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4, 9)).astype(np.float32)
    from pipeline.codec.quantize import calibrate, stats_from_latents

    params = calibrate(stats_from_latents(x, np.full_like(x, -2.0)), QuantizerConfig(mode="affine"))
    codes, clipped = quantize(x, params)
    assert clipped == 0
    err = np.abs(dequantize(codes, params) - x)
    assert (err <= np.asarray(params.step)[None, :, None] / 2 + 1e-6).all()


def test_posterior_mode_drops_dead_channels_and_follows_sigma():
    from pipeline.codec.quantize import CalibrationStats, calibrate

    stats = CalibrationStats(
        minimum=np.array([-3.0, -0.01, -3.0]),
        maximum=np.array([3.0, 0.01, 3.0]),
        mean_sigma=np.array([0.1, 1.0, 0.5]),
        kl_per_element=np.array([2.0, 0.001, 1.0]),
    )
    p = calibrate(stats, QuantizerConfig(mode="posterior", step_sigmas=1.0))
    assert p.active == (True, False, True)
    assert p.step[0] == pytest.approx(0.1) and p.step[2] == pytest.approx(0.5)
    codes, clipped = quantize(np.array([[[2.5], [0.0], [9.0]]]), p)
    assert codes.shape == (1, 2, 1) and clipped == 1  # 9.0 is outside the range
    back = dequantize(codes, p)
    assert back[0, 1, 0] == 0.0 and abs(back[0, 0, 0] - 2.5) <= 0.05 + 1e-9


def test_flipped_code_byte_is_caught_by_the_checksum(archive):
    path = str(next(archive.glob("*.vz.parquet")))
    meta = read_meta(path)
    table = pq.read_table(path).to_pydict()
    codec = Codec(meta.codec)
    raw = bytearray(codec.raw(table["vz_codes"][3]))
    raw[0] ^= 1
    frames = list(table["vz_codes"])
    frames[3] = codec.encode_raw(bytes(raw))
    with pytest.raises(InputError, match="row 3: checksum mismatch"):
        decompress(frames, table["vz_crc32"], table["vz_latent_shape"], meta.quantizer, codec, path, 0)
    assert checksum(bytes(raw)) != table["vz_crc32"][3]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format_version=3), "unknown archive format version 3"),
        (lambda m: m.update(format_version=True), "unknown archive format version True"),
        (lambda m: m["codec"].update(framing="block"), "unknown framing 'block'"),
        (
            lambda m: m.update(format_version=1) or m["codec"].update(framing="column"),
            "format version 1 has per-row frames only",
        ),
        (lambda m: m["quantizer"].update(step=[0.0]), "bad archive metadata"),
        (lambda m: m["codec"].update(name="lz4"), "bad archive metadata"),
        (lambda m: m["codec"].update(dictionary_b64="!!"), "bad archive metadata"),
        (lambda m: m["codec"].update(centers=[1]), "fold centers for"),
        (lambda m: m["codec"].update(centers=[300] * len(m["codec"]["centers"])), "outside 0..255"),
        (lambda m: m["codec"].update(transform="none"), "transform 'none' with"),
    ],
)
def test_untrusted_metadata_is_checked(archive, edit, match):
    path = str(next(archive.glob("*.vz.parquet")))
    data = json.loads(pq.read_schema(path).metadata[b"vaezip"])
    edit(data)
    with pytest.raises(InputError, match=match):
        ArchiveMeta.from_json(json.dumps(data), path)


def test_metadata_round_trips(archive):
    meta = read_meta(str(next(archive.glob("*.vz.parquet"))))
    again = ArchiveMeta.from_json(meta.to_json(), "x")
    assert again == meta
    assert isinstance(again.quantizer, QuantizerParams)
    assert base64.b64decode(json.loads(meta.to_json())["codec"]["dictionary_b64"]) == meta.codec.dictionary


def test_version_1_archives_are_still_read(archive, tmp_path):
    """Format v1 is v2 with per-row frames and no "framing" field."""
    path = str(next(archive.glob("*.vz.parquet")))
    if read_meta(path).codec.framing != "row":
        pytest.skip("version 1 had per-row frames only")
    pf = pq.ParquetFile(path)
    data = json.loads(pf.schema_arrow.metadata[b"vaezip"])
    data["format_version"] = 1
    del data["codec"]["framing"]
    old = str(tmp_path / "v1.vz.parquet")
    pq.write_table(pf.read().replace_schema_metadata({b"vaezip": json.dumps(data).encode()}), old)
    meta = read_meta(old)
    assert meta.format_version == 1 and meta.codec.framing == "row"
    _, got = vaezip_latents(old)
    assert all(np.array_equal(t["latent"], g) for t, g in zip(read_archive_codes(old), got, strict=True))
