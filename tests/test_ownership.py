"""Never delete what is not yours: decode refuses a folder holding an encode archive or another
archive's decode, and removes nothing outside its output folder. Real Ray; each case is one a
hostile run found (the issue's items 1 and 2)."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import InputError
from pipeline.ledger.ownership import clear_stale_outputs
from tests.helpers import decode, encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_archives(tmp_path_factory, digits_dir, digits_ckpt):
    root = tmp_path_factory.mktemp("own")
    one, two = root / "a", root / "b"
    assert encode(digits_dir, digits_ckpt, one) == 0
    part = root / "part"
    part.mkdir()
    shutil.copy(f"{digits_dir}/digits-00003.npz", part / "late.npz")
    assert encode(part, digits_ckpt, two) == 0
    return one, two


def test_decode_into_an_encode_archive_is_refused_and_the_archive_stays(
    tmp_path, two_archives, digits_ckpt, capsys
):
    one, two = two_archives
    victim = shutil.copytree(two, tmp_path / "victim")
    before = _tree(victim)
    for extra in ((), ("--overwrite",)):
        assert decode(one, digits_ckpt, victim, *extra) == 2
        err = capsys.readouterr().err
        assert "holds an encode archive (job.json)" in err and "decode never removes an archive" in err
        assert _tree(victim) == before


def test_decode_into_another_archives_decode_is_refused_unless_overwrite(
    tmp_path, two_archives, digits_ckpt, capsys
):
    one, two = two_archives
    out = tmp_path / "out"
    assert decode(two, digits_ckpt, out, "--format", "images") == 0
    (out / "mine.txt").write_text("somebody else's file")
    before = _tree(out)
    assert decode(one, digits_ckpt, out, "--format", "images") == 2
    err = capsys.readouterr().err
    assert "holds the decode of another archive" in err and "late.vz.parquet" in err
    assert _tree(out) == before  # nothing removed
    assert decode(one, digits_ckpt, out, "--format", "images", "--overwrite") == 0
    left = _tree(out)
    assert not [n for n in left if n.startswith("late")]  # only that decode's files went ...
    assert left["mine.txt"] == b"somebody else's file"  # ... anybody else's stay
    assert len([n for n in left if n.endswith(".index.parquet")]) == 4


def test_decode_removes_nothing_outside_its_folder(tmp_path, two_archives, digits_ckpt, capsys):
    _, two = two_archives
    out = tmp_path / "out"
    assert decode(two, digits_ckpt, out, "--format", "images") == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    index = out / "late.index.parquet"
    table = pq.read_table(index)
    files = table["file"].to_pylist()
    files[5] = "../victim.txt"
    pq.write_table(table.set_column(table.schema.get_field_index("file"), "file", pa.array(files)), index)
    record = json.loads((out / "_done" / "late.index.parquet.json").read_text())
    record["job_fingerprint"] = "0" * 64  # stale: the clean-up wants to remove it
    (out / "_done" / "late.index.parquet.json").write_text(json.dumps(record))
    # ... with no manifest or progress table of this decode to say otherwise
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "_manifest")
    before = _tree(out)
    assert decode(two, digits_ckpt, out, "--format", "images") == 2
    err = capsys.readouterr().err
    assert f"{index} row 5: file '../victim.txt' lies outside {out}; nothing was removed" in err
    assert victim.read_text() == "keep me" and _tree(out) == before


def test_a_record_that_names_no_decode_output_removes_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "_done").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "_done" / "notes.txt.json").write_text("{}")  # unreadable as a record: stale
    with pytest.raises(InputError, match="notes.txt: not a decode output's name; nothing was removed"):
        clear_stale_outputs(str(out), set(), "f" * 64, overwrite=False)
    assert (out / "notes.txt").read_text() == "mine"
