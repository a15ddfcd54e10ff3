"""Nothing silently wrong: decode, inspect and verify trust only what a checksum covers, and an
output folder holds exactly one job's files. Real Ray; each case is one an attack run found."""

import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import inspect as inspect_job
from jobs import verify as verify_job
from jobs._cli import run_main
from tests.helpers import change_a_step_digit, decode, encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, digits_dir, digits_ckpt):
    arch = tmp_path_factory.mktemp("integrity") / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    return arch


@pytest.fixture
def arch(tmp_path, archive):
    """A private copy of the archive to damage."""
    return shutil.copytree(archive, tmp_path / "arch")


def _failures(out) -> dict[str, str]:
    return {f["shard"]: f["error"] for f in json.loads((out / "failures.json").read_text())}


@pytest.mark.parametrize("valid_footer", [False, True])
def test_a_changed_quantizer_step_in_a_footer_is_caught(arch, tmp_path, digits_ckpt, valid_footer):
    victim = arch / "digits-00001.vz.parquet"
    size = victim.stat().st_size
    change_a_step_digit(victim, valid_footer)
    assert victim.stat().st_size == size
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out) == 1
    error = _failures(out)["digits-00001.npy"]
    expected = "sha256 does not match" if valid_footer else "metadata does not match its checksum"
    assert expected in error and "digits-00001.vz.parquet" in error
    assert sorted(p.name for p in out.glob("*.npy")) == [f"digits-0000{i}.npy" for i in (0, 2, 3)]
    assert run_main(inspect_job.main, [str(arch)]) != 0


def test_a_file_deleted_after_the_manifest_fails_its_shard(arch, tmp_path, digits_ckpt, capsys):
    (arch / "digits-00002.vz.parquet").unlink()
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out) == 1
    assert "listed in the archive's manifest but missing" in _failures(out)["digits-00002.npy"]
    assert run_main(inspect_job.main, [str(arch)]) == 1
    assert "digits-00002.vz.parquet: listed in the archive's manifest but missing" in capsys.readouterr().out


def _rewrite_manifest(arch, edit, version):
    """The manifest's files edited by ``edit`` and written back whole, as a liar would (the
    table's hash in manifest.json made to fit), or as a version 1 manifest.json."""
    import hashlib

    import pyarrow as pa

    manifest = json.loads((arch / "manifest.json").read_text())
    shards = pq.read_table(arch / "_manifest" / "files.parquet").to_pylist()
    edit(shards)
    if version == 1:
        (arch / "_manifest" / "files.parquet").unlink()
        manifest = {k: v for k, v in manifest.items() if k not in ("table", "manifest_version")}
        manifest["shards"] = shards
    else:
        pq.write_table(
            pa.Table.from_pylist(shards, schema=pq.read_schema(arch / "_manifest" / "files.parquet")),
            arch / "_manifest" / "files.parquet",
        )
        data = (arch / "_manifest" / "files.parquet").read_bytes()
        manifest["table"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (arch / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("version", [1, 2])
def test_a_lying_manifest_is_caught(arch, tmp_path, digits_ckpt, capsys, version):
    def lie(shards):
        shards[0]["sha256"] = "0" * 64  # a hash that lies
        shards.append(dict(shards[1], name="ghost.vz.parquet"))  # a ghost

    _rewrite_manifest(arch, lie, version)
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out) == 1
    failures = _failures(out)
    assert "sha256 does not match" in failures["digits-00000.npy"]
    assert "missing" in failures["ghost.npy"]
    assert set(failures) == {"digits-00000.npy", "ghost.npy"}
    assert run_main(inspect_job.main, [str(arch)]) == 1
    text = capsys.readouterr().out
    assert "2 file(s) FAILED" in text


def test_a_file_no_record_covers_is_refused(arch, tmp_path, digits_ckpt):
    shutil.copy(arch / "digits-00003.vz.parquet", arch / "stranger.vz.parquet")
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out) == 1
    assert "no checksum covers it" in _failures(out)["stranger.npy"]


def test_verify_checks_the_archive_against_its_manifest(arch, tmp_path, digits_dir, digits_ckpt, capsys):
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out) == 0
    args = ["--original", digits_dir, "--restored", str(out), "--archive", str(arch)]
    assert run_main(verify_job.main, args) == 0
    assert "every file matches its manifest entry" in capsys.readouterr().out
    data = bytearray((arch / "digits-00000.vz.parquet").read_bytes())
    data[len(data) // 2] ^= 1
    (arch / "digits-00000.vz.parquet").write_bytes(bytes(data))
    assert run_main(verify_job.main, args) == 1
    assert "FAILED" in capsys.readouterr().out


def test_overwrite_leaves_exactly_one_jobs_files(tmp_path, digits_dir, digits_ckpt):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    shutil.copy(f"{digits_dir}/digits-00000.npz", narrow / "only.npz")
    (arch / "colleague-notes.txt").write_text("not vaezip's")
    assert encode(narrow, digits_ckpt, arch, "--overwrite", "--zstd-level", "3") == 0
    assert sorted(p.name for p in arch.glob("*.vz.parquet")) == ["only.vz.parquet"]
    assert sorted(p.name for p in (arch / "_done").iterdir()) == ["only.vz.parquet.json"]
    assert (arch / "colleague-notes.txt").exists()
    assert pq.read_table(arch / "_manifest" / "files.parquet").column("name").to_pylist() == [
        "only.vz.parquet"
    ]


@pytest.mark.parametrize("fmt", ["images", "webdataset"])
def test_a_failed_shard_leaves_nothing_under_final_names(arch, tmp_path, digits_ckpt, fmt):
    """A footer changed with its checksum made consistent: only the sha256 against the manifest
    catches it, after every row was decoded; none of that shard's outputs may stay."""
    change_a_step_digit(arch / "digits-00001.vz.parquet", keep_footer_checksum_valid=True)
    out = tmp_path / "out"
    assert decode(arch, digits_ckpt, out, "--format", fmt) == 1
    assert list(_failures(out)) == [f"digits-00001{'.index.parquet' if fmt == 'images' else '.tar'}"]
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert not [n for n in names if n.startswith("digits-00001")]  # no images, index or tar
    assert not [n for n in names if ".vz" in n]  # no staging or temporary files
    good = [n for n in names if n.startswith("digits-00000")]
    assert len(good) == (513 if fmt == "images" else 1)  # the other shards are whole


def test_a_decode_rerun_after_a_reencode_redoes_everything_and_keeps_nothing_stale(
    tmp_path, digits_dir, digits_ckpt, capsys
):
    arch, out = tmp_path / "arch", tmp_path / "out"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert decode(arch, digits_ckpt, out, "--format", "images") == 0
    first_index = sorted(p.name for p in out.glob("*.index.parquet"))
    assert len(first_index) == 4
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    shutil.copy(f"{digits_dir}/digits-00003.npz", narrow / "late.npz")
    assert encode(narrow, digits_ckpt, arch, "--overwrite") == 0
    capsys.readouterr()
    assert decode(arch, digits_ckpt, out, "--format", "images") == 0
    assert re.search(r"decoded 1 shards \(0 already complete", capsys.readouterr().out)
    assert sorted(p.name for p in out.glob("*.index.parquet")) == ["late.index.parquet"]
    assert not list(out.glob("digits-*/*.png"))  # the earlier decode's images are gone
    assert len(list((out / "late").iterdir())) == 1797 - 3 * 512  # key late:<row> -> late/<row>.png


def test_a_second_driver_on_a_claimed_output_is_refused_with_one_line(
    tmp_path, digits_dir, digits_ckpt, capsys
):
    import os
    import socket

    arch = tmp_path / "arch"
    arch.mkdir()
    holder = {"kind": "encode", "host": socket.gethostname(), "pid": os.getppid(), "since": 0}
    (arch / "_claim.json").write_text(json.dumps(holder))  # a live driver (this test's parent)
    assert encode(digits_dir, digits_ckpt, arch) == 2
    err = capsys.readouterr().err
    assert f"is in use by another encode driver, pid {os.getppid()}" in err and err.count("\n") == 1
    assert sorted(p.name for p in arch.iterdir()) == ["_claim.json"]  # nothing written
    holder["pid"] = 2**22 + 12345  # a driver that died: its claim is taken over
    (arch / "_claim.json").write_text(json.dumps(holder))
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert not (arch / "_claim.json").exists()  # released at the end


def test_only_this_jobs_temporary_files_are_removed(tmp_path, digits_dir, digits_ckpt):
    arch = tmp_path / "arch"
    (arch / "colleague").mkdir(parents=True)
    assert encode(digits_dir, digits_ckpt, arch) == 0
    tag = json.loads((arch / "job.json").read_text())["job_fingerprint"][:16]
    theirs = [
        arch / "colleague" / ".upload-in-progress.tmp",
        arch / ".other.vz-0123456789abcdef.1.tmp",
        arch / ".d0.vz.parquet.tmp",  # looks like vaezip's, is not a name vaezip makes
        arch / ".other.vz-0123456789abcdef.0123456789abcdef0123456789abcdef.tmp",  # another job's
        arch / "colleague" / f".x.vz-{tag}.{'0' * 32}.tmp",  # a folder vaezip never writes
    ]
    for p in theirs:
        p.write_bytes(b"x")
    mine = [  # workers that died mid-write: an archive file and a record
        arch / f".digits-00000.vz.parquet.vz-{tag}.{'d' * 32}.tmp",
        arch / "_done" / f".digits-00000.vz.parquet.json.vz-{tag}.{'e' * 32}.tmp",
    ]
    for p in mine:
        p.write_bytes(b"half")
    (arch / "_done" / "digits-00000.vz.parquet.json").unlink()  # so the re-run has work to do
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert not any(p.exists() for p in mine)
    assert all(p.exists() for p in theirs)


def test_outputs_that_overlap_the_input_are_refused(tmp_path, archive, digits_dir, digits_ckpt, capsys):
    assert encode(digits_dir, digits_ckpt, f"{digits_dir}/archive") == 2
    assert "lies inside --input" in capsys.readouterr().err
    assert decode(archive, digits_ckpt, archive) == 2
    assert "lies inside --input" in capsys.readouterr().err
    assert (archive / "manifest.json").exists() and not (archive / "decode.config.yaml").exists()


def test_a_folder_named_with_brackets_is_not_a_glob(tmp_path, digits, digits_ckpt):
    folder = tmp_path / "scans[2024]"
    folder.mkdir()
    np.save(folder / "a.npy", digits[0][:20])
    assert encode(folder, digits_ckpt, tmp_path / "arch") == 0
    assert (tmp_path / "arch" / "a.vz.parquet").exists()


def test_two_inputs_never_share_an_output_file(tmp_path, digits, digits_ckpt, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    np.save(tmp_path / "in" / "sub" / "d.npy", digits[0][:100])
    np.save(tmp_path / "in" / "sub__d.npy", digits[0][:50])
    assert encode(tmp_path / "in", digits_ckpt, tmp_path / "arch") == 2
    err = capsys.readouterr().err
    assert "sub/d.npy" in err and "sub__d.npy" in err and "would both be written to sub__d.vz.parquet" in err
    assert not (tmp_path / "arch").exists()


def test_image_files_that_differ_only_in_extension_are_refused_before_anything_runs(
    tmp_path, digits, digits_ckpt, capsys
):
    from PIL import Image

    (tmp_path / "in").mkdir()
    for ext in ("jpg", "png"):
        Image.fromarray(digits[0][0].astype(np.uint8)).save(tmp_path / "in" / f"x.{ext}")
    arch = tmp_path / "arch"
    assert encode(tmp_path / "in", digits_ckpt, arch, "--images-per-shard", "1") == 2
    err = capsys.readouterr().err
    assert "x.jpg and " in err and "x.png would both have the key 'x'" in err
    assert not arch.exists()


def test_webdataset_tars_never_share_a_key(tmp_path, digits_ckpt, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):  # ids repeat across files: each file is fine alone
        pq.write_table(
            pa.table({"x": [[0.5] * 64] * 3, "id": ["one", "two", "three"]}),
            tmp_path / "in" / f"{name}.parquet",
        )
    arch = tmp_path / "arch"
    assert encode(tmp_path / "in", digits_ckpt, arch, "--key-column", "id", "--column", "x") == 0
    capsys.readouterr()
    assert decode(arch, digits_ckpt, tmp_path / "out", "--format", "webdataset") == 2
    assert "keys 'one'" in capsys.readouterr().err
    assert decode(arch, digits_ckpt, tmp_path / "out", "--format", "npy") == 0  # one file per shard


def test_two_drivers_started_together_leave_one_jobs_archive(tmp_path, digits_dir, digits_ckpt):
    """Two encode drivers with different settings on one output, started at once (each with
    its own local Ray): one finishes, the other is refused with one line, and every file in
    the archive belongs to the one job that ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow.parquet as pq

    root = Path(__file__).resolve().parents[1]
    arch = tmp_path / "arch"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.encode",
                "--input",
                digits_dir,
                "--checkpoint",
                digits_ckpt,
                "--output",
                str(arch),
                "--calibration-rows",
                "256",
                "--zstd-level",
                level,
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for level in ("3", "9")
    ]
    outcomes = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in outcomes) == [0, 2], outcomes
    refused = next(err for rc, err in outcomes if rc == 2)
    assert [ln for ln in refused.splitlines() if ln.startswith("error: ")], refused
    job = json.loads((arch / "job.json").read_text())
    files = sorted(arch.glob("*.vz.parquet"))
    assert len(files) == 4
    metas = [json.loads(pq.ParquetFile(f).schema_arrow.metadata[b"vaezip"]) for f in files]
    assert {m["job_fingerprint"] for m in metas} == {job["job_fingerprint"]}
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["job_fingerprint"] == job["job_fingerprint"]


def test_a_manifest_table_changed_behind_its_summary_is_refused_naming_it(
    arch, tmp_path, digits_ckpt, capsys
):
    table = pq.read_table(arch / "_manifest" / "files.parquet")
    pq.write_table(table.slice(1), arch / "_manifest" / "files.parquet")  # a file dropped from the list
    assert decode(arch, digits_ckpt, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "files.parquet: sha256 does not match the manifest's: the table changed" in err
    assert not (tmp_path / "out").exists()


def test_one_archive_file_named_by_a_relative_path_is_checked_against_its_folder(
    arch, tmp_path, digits_ckpt, monkeypatch
):
    monkeypatch.chdir(arch.parent)
    out = tmp_path / "one"
    assert decode("arch/digits-00001.vz.parquet", digits_ckpt, out) == 0
    assert sorted(p.name for p in out.glob("*.npy")) == ["digits-00001.npy"]
