"""pipeline.data.outputs and the ArchiveWriter: writers finish on success and release on error."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.codec.codec import CodecParams
from pipeline.codec.format import ArchiveMeta, ArchiveWriter, CodeRows
from pipeline.codec.quantize import QuantizerConfig, calibrate, stats_from_latents
from pipeline.core.errors import InputError
from pipeline.core.hostpool import POOLS
from pipeline.data.outputs import OUTPUT_FORMATS, open_output


def _meta() -> ArchiveMeta:
    m = np.random.default_rng(0).normal(size=(64, 2, 1))
    q = calibrate(stats_from_latents(m, np.full_like(m, -2.0)), QuantizerConfig())
    return ArchiveMeta("fp", {"kind": "mlp"}, q, CodecParams(9, "position", "column", b""), "src", "job")


def _rows(n: int) -> CodeRows:
    return CodeRows(
        keys=[f"k{i}" for i in range(n)],
        codes=[b"\x01\x02"] * n,
        crc32=[0] * n,
        shapes=[[2]] * n,
        dtypes=["float32"] * n,
        latent_shapes=[[2]] * n,
    )


def test_archive_writer_writes_its_footer_on_success_only():
    buf = io.BytesIO()
    with ArchiveWriter(buf, _meta(), "x.vz.parquet") as w:
        w.write(_rows(3), {"label": [1, 2, 3]})
    pf = pq.ParquetFile(io.BytesIO(buf.getvalue()))
    assert pf.metadata.num_rows == 3 and b"vaezip" in pf.schema_arrow.metadata

    broken = io.BytesIO()
    with pytest.raises(InputError, match="passthrough columns changed"):
        with ArchiveWriter(broken, _meta(), "y.vz.parquet") as w:
            w.write(_rows(2), {"label": [1, 2]})
            w.write(_rows(2), {"other": [1, 2]})
    assert w.writer is None  # released
    assert b"vaezip" not in broken.getvalue()


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_output_writers_release_on_error_without_finishing(tmp_path, fmt):
    uri = str(tmp_path / f"shard.{fmt}")
    x = np.zeros((4, 4), np.uint8)
    with pytest.raises(RuntimeError, match="decoder failed"):
        with open(uri, "wb") as f, open_output(fmt, f, uri, rows=2) as w:
            w.write(["a.png"], [x], {})
            raise RuntimeError("decoder failed")
    # no .keys.parquet beside a .npy; no image of an image folder (nor its staging folder)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {f"shard.{fmt}"}


@pytest.mark.parametrize("fmt", ["images", "npy"])
def test_what_a_writer_puts_beside_its_file_is_counted(tmp_path, fmt):
    """The job summary's output bytes include the images (or a .npy's keys file), not only the
    index: it said 1,937 bytes for 488,913 written."""
    uri = str(tmp_path / f"shard.{fmt}")
    x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    with open(uri, "wb") as f, open_output(fmt, f, uri, rows=2) as w:
        w.write(["a.png", "b.png"], [x, x.T.copy()], {})
    beside = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != f"shard.{fmt}"]
    assert len(beside) == (2 if fmt == "images" else 1)
    assert w.extra_bytes == sum(p.stat().st_size for p in beside) > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("fmt", ["parquet", "images", "webdataset"])
def test_image_files_encoded_on_host_workers_are_the_same_bytes(tmp_path, fmt, pool):
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(9)]
    samples += [] if fmt == "parquet" else [np.zeros(3, np.float32)]  # an .npy file among them
    keys = [f"k{i}" for i in range(len(samples))]
    outputs = []
    for workers in (1, 3):
        folder = tmp_path / f"{pool}-{workers}"
        folder.mkdir()
        uri = str(folder / f"shard.{fmt}")
        with open(uri, "wb") as f, open_output(fmt, f, uri, len(keys), None, workers, pool) as w:
            w.write(keys[:5], samples[:5], {})
            w.write(keys[5:], samples[5:], {})
        outputs.append({p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1] and len(outputs[0]) == (len(keys) + 1 if fmt == "images" else 1)


def test_two_keys_that_land_on_one_file_are_refused_naming_both_rows():
    from pipeline.core.errors import ConfigError
    from pipeline.data.outputs import check_sample_paths

    keys = [
        ("a.vz.parquet", 0, "cats/x.jpg"),
        ("a.vz.parquet", 1, "cats/y"),
        ("b.vz.parquet", 3, "cats/x.png"),
    ]
    with pytest.raises(
        ConfigError,
        match=r"'cats/x\.jpg' \(a\.vz\.parquet row 0\) and 'cats/x\.png' \(b\.vz\.parquet row 3\) "
        r"would both be written as 'cats/x'",
    ):
        check_sample_paths("images", lambda: keys)
    check_sample_paths("webdataset", lambda: keys)  # tar keys keep the extension, escaped: no clash


def test_the_key_check_spills_to_disk_and_still_names_both_rows():
    from pipeline.core.errors import ConfigError
    from pipeline.data.outputs import check_sample_paths

    many = [(f"f{i // 1000}.vz.parquet", i % 1000, f"k/{i}") for i in range(10_000)]
    check_sample_paths("images", lambda: many, partitions=4, spill=100)  # every place once
    clash = [*many, ("z.vz.parquet", 7, "k/1234.png")]  # lands on k/1234 as well
    with pytest.raises(
        ConfigError, match=r"'k/1234' \(f1\.vz\.parquet row 234\) and 'k/1234\.png' \(z\.vz\.parquet row 7\)"
    ):
        check_sample_paths("images", lambda: clash, partitions=4, spill=100)
    with pytest.raises(InputError, match="NUL"):
        check_sample_paths("webdataset", lambda: [("a", 0, "x\x00y")])
