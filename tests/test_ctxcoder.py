"""The context-model coder (codec ``rans``): exact round trips, every bad stream named by its
row, and archives that FORMAT.md's own decoder reads."""

import base64
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.codec.codec import Codec, CodecConfig, CodecParams, calibrate_codec, checksum, row_bytes
from pipeline.codec.compress import decompress, encode_codes
from pipeline.codec.ctxcoder import SCALE_BITS, CtxCoder, CtxModel, RowError, encode_varints, fit
from pipeline.codec.format import ArchiveMeta, read_meta
from pipeline.codec.quantize import QuantizerConfig
from pipeline.core.errors import InputError
from pipeline.ledger.job import JobParams
from pipeline.ledger.plan import plan_shards
from pipeline.workers.encode import EncodeSpec, EncodeWorker
from tests.format_reader import read_archive_codes, read_rans_model
from tests.helpers import vaezip_latents


def smooth_codes(n, a, h, w, levels, dtype=np.uint8, seed=0):
    """Codes with the structure latents have: smooth fields, channels that move together."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, h, w)).cumsum(axis=2).cumsum(axis=3)
    field = base + 0.5 * rng.normal(size=(n, a, h, w))
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    return np.rint(field * (levels - 1)).astype(dtype).reshape(n, a, h * w)


@pytest.mark.parametrize(
    "shape, levels, dtype",
    [
        ((40, 4, 8, 8), 32, np.uint8),
        ((40, 3, 5, 7), 256, np.uint8),  # lines of odd width; the full 8-bit range
        ((30, 2, 6, 6), 3000, np.uint16),  # wide residuals: escapes
        ((200, 16, 1, 1), 60, np.uint8),  # an MLP latent: one position, one line
    ],
)
def test_rows_round_trip_exactly(shape, levels, dtype):
    n, a, h, w = shape
    codes = smooth_codes(n, a, h, w, levels, dtype)
    model = CtxModel.from_bytes(fit([(codes[: n // 2], w)]).to_bytes())  # fitted on half
    coder = CtxCoder(model)
    streams = coder.encode(codes, w)
    assert len(streams) == n and all(len(s) % 2 == 0 for s in streams)
    assert np.array_equal(coder.decode(streams, a, h * w, w, np.dtype(dtype)), codes)


def test_codes_outside_the_fitted_tables_are_escaped():
    codes = smooth_codes(20, 2, 4, 4, 8)
    coder = CtxCoder(fit([(codes, 4)]))
    wild = codes.copy()
    wild[3, 1, 5] = 255  # a residual no table has room for
    wild[7, 0, 0] = 0
    back = coder.decode(coder.encode(wild, 4), 2, 16, 4, np.dtype(np.uint8))
    assert np.array_equal(back, wild)


def test_codes_past_the_code_type_are_refused_by_row():
    codes = smooth_codes(6, 2, 4, 4, 200, np.uint16)
    wide = codes.copy()
    wide[4, 1, 15] = 300  # the row's last code: fits the uint16 it was coded from, not uint8
    coder = CtxCoder(fit([(codes, 4)]))
    streams = coder.encode(wide, 4)
    assert np.array_equal(coder.decode(streams, 2, 16, 4, np.dtype(np.uint16)), wide)
    with pytest.raises(RowError, match="outside the code type") as err:
        coder.decode(streams, 2, 16, 4, np.dtype(np.uint8))
    assert err.value.row == 4


def test_the_coder_beats_zstd_on_structured_codes():
    codes = smooth_codes(200, 4, 8, 8, 24)
    model = fit([(codes, 8)])
    streams = CtxCoder(model).encode(codes, 8)
    cfg = CodecConfig()
    zs = Codec(calibrate_codec([codes], cfg))
    import zstandard

    zstd_bytes = len(
        zstandard.ZstdCompressor(level=9).compress(b"".join(row_bytes(codes, "channel", zs.params.centers)))
    )
    assert sum(map(len, streams)) + len(model.to_bytes()) < zstd_bytes


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda s: s[:-2], "ends early|last state"),
        (lambda s: s + b"\0\0", "bytes follow|last state"),
        (lambda s: s[:3], "ends early"),
        (lambda s: b"\0\0\0\0" + s[4:], "first state"),
        (lambda s: s[:4] + bytes(b ^ 0x55 for b in s[4:]), "."),
    ],
)
@pytest.mark.parametrize("row", [6, 7, 10])  # rows decode in pairs: first, second, the odd one out
def test_a_damaged_stream_is_refused_with_its_row(damage, reason, row):
    codes = smooth_codes(11, 3, 6, 6, 40)
    coder = CtxCoder(fit([(codes, 6)]))
    streams = coder.encode(codes, 6)
    streams[row] = damage(streams[row])
    with pytest.raises(RowError, match=reason) as err:
        back = coder.decode(streams, 3, 36, 6, np.dtype(np.uint8))
        # a flipped stream may decode to other in-range codes: the row's checksum catches those
        assert not np.array_equal(back[row], codes[row])
        raise RowError(row, "decoded to other codes")
    assert err.value.row == row


def test_a_row_beside_a_bad_row_still_decodes_alone():
    codes = smooth_codes(4, 2, 4, 4, 30)
    coder = CtxCoder(fit([(codes, 4)]))
    streams = coder.encode(codes, 4)
    for bad in (0, 1):  # the pair (0, 1) fails together; each row is then decoded alone
        damaged = list(streams)
        damaged[bad] = damaged[bad][:-2]
        with pytest.raises(RowError) as err:
            coder.decode(damaged, 2, 16, 4, np.dtype(np.uint8))
        assert err.value.row == bad
        good = 1 - bad
        assert np.array_equal(coder.decode([streams[good]], 2, 16, 4, np.dtype(np.uint8))[0], codes[good])


def test_a_table_of_the_escape_alone_round_trips():
    """A channel whose table holds only the escape (frequency 2**SCALE_BITS, which a valid
    model may store): every code goes out as two uniform words."""
    codes = smooth_codes(5, 2, 3, 3, 200)
    m = fit([(codes, 3)])
    freqs = m.freqs.copy()
    per = freqs.shape[0] // 2
    freqs[per:] = 0
    freqs[per:, 0] = 1 << SCALE_BITS
    sizes = m.sizes.copy()
    sizes[1] = 1
    model = CtxModel.from_bytes(CtxModel(m.centers, m.edges, sizes, freqs).to_bytes())
    coder = CtxCoder(model)
    assert np.array_equal(coder.decode(coder.encode(codes, 3), 2, 9, 3, np.dtype(np.uint8)), codes)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda b: b[:-3], "truncated|does not decompress|trailing"),
        (lambda b: b"\x28\xb5\x2f\xfd" + b[4:], "does not decompress|header|truncated"),
    ],
)
def test_a_bad_model_is_refused(edit, match):
    import zstandard

    blob = fit([(smooth_codes(10, 2, 4, 4, 10), 4)], predict_channels=False).to_bytes()
    raw = zstandard.ZstdDecompressor().decompress(blob)
    with pytest.raises(ValueError, match=match):
        CtxModel.from_bytes(zstandard.ZstdCompressor().compress(edit(raw)))
    bad_sum = bytearray(raw)
    bad_sum[-1] ^= 1  # the last table's escape frequency: its table no longer sums to 2**n
    with pytest.raises(ValueError, match="does not sum"):
        CtxModel.from_bytes(zstandard.ZstdCompressor().compress(bytes(bad_sum)))


def test_channel_prediction_shrinks_codes_whose_channels_move_together():
    """Version 2 codes each channel less its prediction from the earlier channels; a model
    of channels that do not move together stays version 1."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 1, 8, 8)).cumsum(axis=2).cumsum(axis=3)
    field = base * np.array([1.0, 0.8, -0.6, 1.2])[None, :, None, None] + 0.15 * rng.normal(
        size=(60, 4, 8, 8)
    )
    codes = np.rint(128 + field * 100 / np.abs(field).max()).astype(np.uint8).reshape(60, 4, 64)
    sizes = {}
    for predict in (True, False):
        model = CtxModel.from_bytes(fit([(codes[:30], 8)], predict_channels=predict).to_bytes())
        assert model.version == (2 if predict else 1)
        coder = CtxCoder(model)
        streams = coder.encode(codes, 8)
        assert np.array_equal(coder.decode(streams, 4, 64, 8, np.dtype(np.uint8)), codes)
        sizes[predict] = sum(map(len, streams))
    assert sizes[True] < 0.85 * sizes[False]  # 0.78 when written
    apart = np.concatenate([smooth_codes(60, 1, 8, 8, 200, seed=s) for s in range(4)], axis=1)
    assert fit([(apart, 8)]).version == 1


def test_a_prediction_that_leaves_the_code_type_is_refused_by_row():
    """Codes put back from their channel prediction must still be codes of the type."""
    codes = smooth_codes(9, 3, 4, 4, 50)
    m = fit([(codes, 4)])
    assert m.weights is not None and m.bias is not None
    streams = CtxCoder(m).encode(codes, 4)
    bias = m.bias.copy()
    bias[2] += 300 << 8  # channel 2 put back 300 higher: past 255 wherever it was above -45
    shifted = CtxCoder(CtxModel(m.centers, m.edges, m.sizes, m.freqs, m.weights, bias))
    with pytest.raises(RowError, match="outside the code type") as err:
        shifted.decode(streams, 3, 16, 4, np.dtype(np.uint8))
    assert err.value.row == 0


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw + b"\x00", "trailing"),
        (lambda raw: raw[:-1] + encode_varints([(1 << 17) * 2]), "channel prediction out of range"),
    ],
)
def test_a_bad_channel_prediction_is_refused(edit, match):
    import zstandard

    m = fit([(smooth_codes(20, 2, 4, 4, 60), 4)])
    raw = zstandard.ZstdDecompressor().decompress(m.to_bytes())
    assert raw[0] == 2  # the last varint is channel 1's one weight
    with pytest.raises(ValueError, match=match):
        CtxModel.from_bytes(zstandard.ZstdCompressor().compress(edit(raw)))


def test_a_channel_predicted_from_more_than_three_is_refused():
    """Decode's cost per value is bounded by the predictors a channel may have."""
    m = fit([(smooth_codes(20, 5, 4, 4, 60), 4)], predict_channels=False)
    weights, bias = np.zeros((5, 5), dtype=np.int64), np.zeros(5, dtype=np.int64)
    weights[3, :3] = 64
    ok = CtxModel(m.centers, m.edges, m.sizes, m.freqs, weights, bias)
    assert CtxModel.from_bytes(ok.to_bytes()).version == 2
    weights[4, :4] = 64
    crowded = CtxModel(m.centers, m.edges, m.sizes, m.freqs, weights, bias)
    with pytest.raises(ValueError, match="from more than 3 channels"):
        CtxModel.from_bytes(crowded.to_bytes())


@pytest.fixture(scope="module")
def rans_archive(tmp_path_factory, photos, photos_ckpt):
    """Held-out photo crops of the conv test model, written by the worker in codec rans and zstd."""
    root = tmp_path_factory.mktemp("rans")
    out = {}
    for name in ("rans", "zstd"):
        worker = EncodeWorker(EncodeSpec(checkpoint=photos_ckpt, output=str(root / name)))
        shards = plan_shards(str(photos / "heldout"))
        q, c = worker.calibrate(shards, 512, QuantizerConfig(mode="posterior"), CodecConfig(name=name))
        assert c.name == name
        job = JobParams(q, c, "job")
        for s in shards:
            assert worker.process(s, job).ok
        out[name] = root / name
    return out


def test_format_md_decoder_reads_rans_archives(rans_archive):
    rans = sorted(rans_archive["rans"].glob("*.vz.parquet"))
    zstd = sorted(rans_archive["zstd"].glob("*.vz.parquet"))
    assert rans and len(rans) == len(zstd)
    for r, z in zip(rans, zstd, strict=True):
        meta = read_meta(str(r))
        assert meta.codec.name == "rans" and json.loads(meta.to_json())["codec"]["name"] == "rans"
        model = read_rans_model(base64.b64decode(json.loads(meta.to_json())["codec"]["model_b64"]))
        assert len(model["channels"]) == sum(meta.quantizer.active)
        theirs, same = read_archive_codes(str(r)), read_archive_codes(str(z))
        _, ours = vaezip_latents(str(r))
        assert len(theirs) == len(ours) > 0
        for t, s, o in zip(theirs, same, ours, strict=True):
            assert t["key"] == s["key"]
            assert np.array_equal(t["latent"], o) and np.array_equal(t["latent"], s["latent"])
        assert r.stat().st_size < z.stat().st_size  # smaller than zstd on the same codes


def test_duckdb_reads_a_rans_archive(rans_archive):
    glob = f"{rans_archive['rans']}/*.vz.parquet"
    n, total = (
        duckdb.connect()
        .execute(f"SELECT count(*), sum(octet_length(vz_codes)) FROM read_parquet('{glob}')")
        .fetchone()
    )
    assert (
        n == sum(len(pq.read_table(str(p))) for p in rans_archive["rans"].glob("*.vz.parquet")) and total > 0
    )


def test_a_corrupt_rans_row_is_named(rans_archive):
    path = str(next(rans_archive["rans"].glob("*.vz.parquet")))
    meta = read_meta(path)
    table = pq.read_table(path).to_pydict()
    codec = Codec(meta.codec)
    rows = list(table["vz_codes"])
    rows[2] = rows[2][:-2]
    with pytest.raises(InputError, match="row 2: codes do not decompress"):
        decompress(rows, table["vz_crc32"], table["vz_latent_shape"], meta.quantizer, codec, path, 0)
    crcs = list(table["vz_crc32"])
    crcs[4] ^= 1
    with pytest.raises(InputError, match="row 4: checksum mismatch"):
        decompress(table["vz_codes"], crcs, table["vz_latent_shape"], meta.quantizer, codec, path, 0)


def test_rans_metadata_is_checked(rans_archive):
    path = str(next(rans_archive["rans"].glob("*.vz.parquet")))
    data = json.loads(pq.read_schema(path).metadata[b"vaezip"])
    assert ArchiveMeta.from_json(json.dumps(data), path) == read_meta(path)
    for edit, match in [
        (lambda m: m["codec"].update(model_b64="AAAA"), "bad archive metadata"),
        (lambda m: m["codec"].update(layout="position"), "channel-major rows"),
        (lambda m: m["quantizer"].update(active=[not a for a in m["quantizer"]["active"]]), "channels"),
        (lambda m: m.update(format_version=1), "format version 1"),
    ]:
        bad = json.loads(json.dumps(data))
        edit(bad)
        with pytest.raises(InputError, match=match):
            ArchiveMeta.from_json(json.dumps(bad), path)


def test_encode_codes_keeps_each_rows_checksum_of_its_raw_codes():
    codes = smooth_codes(12, 3, 4, 4, 20)
    codec = Codec(calibrate_codec([codes], CodecConfig(name="rans"), [4]))
    payloads, crcs = encode_codes(list(codes), codec, [4] * 12)
    assert crcs == [checksum(r) for r in row_bytes(codes, "channel")]
    params = CodecParams.from_dict(codec.params.to_dict())
    assert params == codec.params
    raws = Codec(params).raws(payloads, [(3, 16, 4)] * 12, np.dtype(np.uint8))
    assert raws == row_bytes(codes, "channel")


def test_a_stored_model_is_parsed_once_and_shared_read_only():
    blob = fit([(smooth_codes(10, 2, 4, 4, 10), 4)]).to_bytes()
    model = CtxModel.from_bytes(blob)
    assert CtxModel.from_bytes(bytes(bytearray(blob))) is model  # by content, not by object
    assert CtxCoder.for_model(blob) is CtxCoder.for_model(blob)
    with pytest.raises(ValueError, match="read-only"):
        model.freqs[0, 0] = 1  # shared by every file of a job: nobody may change it


def test_a_model_bomb_is_refused_from_its_header():
    """7 KB that declare 3,000 channels (a decode worker once built 3.7 GB of tables from
    such a frame): refused from the channel count, before any table is read or built."""
    import zstandard

    from pipeline.codec.ctxcoder import GROUPS, MAX_CHANNELS, SIGNS, declared_channels
    from pipeline.codec.ctxcoder import encode_varints as _varints

    channel = _varints([0, 1, *([0] * (GROUPS - 1)), *([1 << SCALE_BITS] * (GROUPS * SIGNS))])
    raw = bytes([1, SCALE_BITS, GROUPS, SIGNS]) + _varints([3000]) + channel * 3000
    bomb = zstandard.ZstdCompressor(level=19).compress(raw)
    assert len(bomb) < 8_000
    for parse in (CtxModel.from_bytes, declared_channels):
        with pytest.raises(ValueError, match=f"has 3000 channels \\(at most {MAX_CHANNELS}\\)"):
            parse(bomb)
    ok = bytes([1, SCALE_BITS, GROUPS, SIGNS]) + _varints([MAX_CHANNELS]) + channel * MAX_CHANNELS
    assert CtxModel.from_bytes(zstandard.ZstdCompressor().compress(ok)).channels == MAX_CHANNELS
    huge = zstandard.ZstdCompressor().compress(bytes(17 << 20))  # decompresses past the bound
    with pytest.raises(ValueError, match="does not decompress"):
        CtxModel.from_bytes(huge)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_decode_checks_the_files_hash_before_it_builds_a_rans_model(
    rans_archive, tmp_path, photos_ckpt, capsys
):
    """A footer whose model was swapped (its checksum made consistent, as one who knows the
    format would): the worker refuses the file by its recorded sha256 before parsing the model."""
    import hashlib
    import shutil

    import zstandard

    from tests.helpers import decode

    arch = shutil.copytree(rans_archive["rans"], tmp_path / "arch")
    path = sorted(arch.glob("*.vz.parquet"))[0]
    pf = pq.ParquetFile(path)
    data = json.loads(pf.schema_arrow.metadata[b"vaezip"])
    raw = bytearray(zstandard.ZstdDecompressor().decompress(base64.b64decode(data["codec"]["model_b64"])))
    raw[-1] ^= 1  # the last table no longer sums to 2**n: what parsing would report
    data["codec"]["model_b64"] = base64.b64encode(zstandard.ZstdCompressor().compress(bytes(raw))).decode()
    meta = json.dumps(data).encode()
    table = pf.read().replace_schema_metadata(
        {b"vaezip": meta, b"vaezip.sha256": hashlib.sha256(meta).hexdigest()}
    )
    pq.write_table(table, path)
    with pytest.raises(ValueError, match="does not sum"):  # the model is bad ...
        CtxModel.from_bytes(base64.b64decode(data["codec"]["model_b64"]))
    assert decode(arch, photos_ckpt, tmp_path / "out") == 1
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert [f["shard"] for f in failures] == [path.name.replace(".vz.parquet", ".npy")]
    assert "sha256 does not match the archive's record" in failures[0]["error"]  # ... never parsed
