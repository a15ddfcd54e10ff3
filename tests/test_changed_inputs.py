"""A resume notices inputs that changed since their shard was encoded (the record names the
input's size and version as listed): they are encoded again, or refused by option. Real Ray."""

import json
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]


@pytest.fixture
def inputs(tmp_path, digits):
    x = digits[0]
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"part{i}.npy", x[i * 100 : (i + 1) * 100])
    return folder


def _rows(arch) -> int:
    return sum(pq.read_metadata(p).num_rows for p in arch.glob("*.vz.parquet"))


def test_rows_appended_to_an_input_are_encoded_on_resume(inputs, digits, digits_ckpt, tmp_path, capsys):
    arch = tmp_path / "arch"
    assert encode(inputs, digits_ckpt, arch) == 0
    assert _rows(arch) == 300
    record = json.loads((arch / "_done" / "part1.vz.parquet.json").read_text())
    assert record["input_identity"].startswith(f"{(inputs / 'part1.npy').stat().st_size}:")
    np.save(inputs / "part1.npy", digits[0][100:250])  # 50 rows appended
    capsys.readouterr()
    assert encode(inputs, digits_ckpt, arch) == 0
    out = capsys.readouterr().out
    assert re.search(r"encoded 1 shards \(2 already complete, 0 failed\) of 3: 150 rows", out)
    assert _rows(arch) == 350
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["rows"] == 350


def test_a_changed_input_can_be_refused_with_one_line(inputs, digits_ckpt, tmp_path, capsys):
    arch = tmp_path / "arch"
    assert encode(inputs, digits_ckpt, arch) == 0
    before = {p.name: p.read_bytes() for p in arch.glob("*.vz.parquet")}
    st = (inputs / "part2.npy").stat()
    os.utime(inputs / "part2.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same size
    capsys.readouterr()
    assert encode(inputs, digits_ckpt, arch, "--changed-inputs", "refuse") == 2
    err = capsys.readouterr().err
    assert "part2.npy changed since it was encoded into part2.vz.parquet (1 input(s) changed)" in err
    assert {p.name: p.read_bytes() for p in arch.glob("*.vz.parquet")} == before
    assert encode(inputs, digits_ckpt, arch) == 0  # the default: encode it again
    assert re.search(r"encoded 1 shards \(2 already complete", capsys.readouterr().out)
