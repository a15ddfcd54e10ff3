"""Array samples are bounded from their headers like images: a .npy, an .npz member, a Parquet
tensor column or an npy field in a tar that declares more than --max-pixels allows is refused
before anything is allocated, fails its own shard with one line, and the other shards finish.
Real Ray where a worker is involved."""

import io
import json
import tarfile
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import InputError
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.readers.base import Limits
from tests.helpers import encode


def npy_header(shape: tuple[int, ...], dtype: str = "<u1") -> bytes:
    """A .npy's magic and header alone: 128 bytes that declare ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    assert buf.getvalue().startswith(b"\x93NUMPY")
    return buf.getvalue()


def deflated_npz(path, shape: tuple[int, ...]) -> None:
    """An .npz whose member declares ``shape`` of uint8 zeros, written in 1 MiB steps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header(shape))
            left = int(np.prod(shape))
            while left:
                n = min(left, 1 << 20)
                f.write(bytes(n))
                left -= n


def _read_all(path, **limits):
    options = ReadOptions(limits=Limits(**limits)) if limits else ReadOptions()
    return sum(len(b) for b in iter_batches(str(path), options))


def test_a_npy_declaring_a_huge_sample_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(npy_header((1, 600000, 600000, 3)))
    assert len(bomb.read_bytes()) <= 256
    with pytest.raises(InputError, match=r"bomb\.npy row 0: a sample of shape \(600000, 600000, 3\) holds"):
        _read_all(bomb)


def test_a_deflated_npz_member_is_refused_before_it_is_inflated(tmp_path):
    bomb = tmp_path / "bomb.npz"
    deflated_npz(bomb, (1, 2000, 2000, 3))  # 12 MB of zeros in a few KB; the default allows it
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"bomb\.npz\[x\] row 0: .* more than --max-pixels 1,000,000"):
        _read_all(bomb, max_pixels=1_000_000)
    assert _read_all(bomb) == 1


def test_a_parquet_tensor_column_is_bounded_from_the_footer(tmp_path):
    rows = [np.zeros(64 * 64 * 3, np.uint8).tolist() for _ in range(4)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": rows}), path, row_group_size=2)
    assert _read_all(path) == 4
    with pytest.raises(
        InputError, match=r"t\.parquet row 0: row group 0 declares 24,576 values of column 'x' for 2 rows"
    ):
        _read_all(path, max_pixels=1000)


def test_a_npy_field_in_a_tar_is_bounded(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as t:
        for i, shape in enumerate([(8, 8, 3), (1000, 1000, 3)]):
            buf = io.BytesIO()
            np.save(buf, np.zeros(shape, np.uint8))
            info = tarfile.TarInfo(f"{i:03d}.npy")
            info.size = len(buf.getvalue())
            t.addfile(info, io.BytesIO(buf.getvalue()))
    with pytest.raises(
        InputError, match=r"s\.tar row 1: a sample of shape \(1000, 1000, 3\) holds 3,000,000"
    ):
        _read_all(path, max_pixels=100_000)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_a_bomb_beside_a_good_file_fails_alone_and_the_good_shard_is_encoded(
    tmp_path, digits, digits_ckpt, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", digits[0][:200])
    (folder / "bomb.npy").write_bytes(npy_header((1, 600000, 600000, 3)))
    arch = tmp_path / "arch"
    assert encode(folder, digits_ckpt, arch) == 1  # a failed shard: non-zero, the rest done
    assert (arch / "good.vz.parquet").exists() and not (arch / "bomb.vz.parquet").exists()
    failures = json.loads((arch / "failures.json").read_text())
    assert [f["shard"] for f in failures] == ["bomb.vz.parquet"]
    assert "bomb.npy row 0: a sample of shape (600000, 600000, 3)" in failures[0]["error"]
    assert "MemoryError" not in capsys.readouterr().err
