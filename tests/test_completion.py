"""pipeline.ledger.completion: the record, is_complete, and the run_shard skeleton every worker uses."""

import hashlib
import json
import subprocess
import sys

import pytest

from pipeline.core.errors import InputError
from pipeline.ledger.completion import (
    DONE,
    CompletionRecord,
    Stopwatch,
    Written,
    done_uri,
    is_complete,
    read_record,
    run_shard,
    write_record,
)
from pipeline.ledger.shard import Shard


@pytest.fixture
def shard(tmp_path):
    src = tmp_path / "in" / "a.npy"
    src.parent.mkdir()
    src.write_bytes(b"0123456789")
    return Shard(source=str(src), relpath="a.npy", name="a.vz.parquet")


def test_the_driver_side_imports_no_torch():
    modules = "pipeline.run.runner, jobs._driver, pipeline.ledger.completion"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_shard_commits_the_output_then_its_record(tmp_path, shard):
    out = str(tmp_path / "out")
    clock = Stopwatch()

    def body(f, uri):
        assert uri == f"{out}/a.vz.parquet"
        with clock.timing():
            f.write(b"hello ")
        f.write(b"world")
        return Written(rows=3, clipped=2)

    result = run_shard(out, shard, shard.name, "job-1", body, clock)
    data = (tmp_path / "out" / shard.name).read_bytes()
    assert data == b"hello world"
    assert result.ok and result.rows == 3 and result.clipped == 2
    assert result.output_bytes == 11 and result.input_bytes == 10
    assert 0 < result.model_seconds <= result.seconds
    record = read_record(out, shard.name)
    assert record == CompletionRecord(
        job_fingerprint="job-1",
        name=shard.name,
        source=shard.source,
        rows=3,
        bytes=11,
        sha256=hashlib.sha256(data).hexdigest(),
        input_bytes=10,
        clipped=2,
        seconds=record.seconds,
    )
    assert is_complete(out, shard.name, "job-1")
    assert not is_complete(out, shard.name, "job-2")


@pytest.mark.parametrize(
    "outcome, message",
    [
        ("error", "a.npy row 4: bad row"),
        ("empty", "a.npy: shard holds no rows"),
    ],
)
def test_a_failed_shard_is_a_value_and_leaves_nothing(tmp_path, shard, outcome, message):
    out = tmp_path / "out"

    def body(f, uri):
        f.write(b"partial")
        if outcome == "error":
            raise InputError(shard.source, "bad row", row=4)
        return Written(rows=0)

    result = run_shard(str(out), shard, shard.name, "job", body)
    assert not result.ok and result.error.endswith(message) and not result.retryable
    assert sorted(p.name for p in out.rglob("*")) == []  # no output, no record, no temporary


def test_other_errors_are_not_swallowed(tmp_path, shard):
    def body(f, uri):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_shard(str(tmp_path / "out"), shard, shard.name, "job", body)
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_is_complete_needs_the_whole_output_the_record_describes(tmp_path):
    out = str(tmp_path)
    record = CompletionRecord("job", "x.vz.parquet", "src", rows=1, bytes=4, sha256="-")
    write_record(out, record)
    assert not is_complete(out, "x.vz.parquet", "job")  # output missing
    (tmp_path / "x.vz.parquet").write_bytes(b"abc")
    assert not is_complete(out, "x.vz.parquet", "job")  # shorter than recorded
    (tmp_path / "x.vz.parquet").write_bytes(b"abcd")
    assert is_complete(out, "x.vz.parquet", "job")
    assert done_uri(out, "x.vz.parquet") == f"{out}/{DONE}/x.vz.parquet.json"


def test_shard_states_from_two_listings_agree_with_one_shard_at_a_time(tmp_path):
    from pipeline.ledger.completion import shard_state, shard_states

    out = str(tmp_path)
    shards = [
        Shard(source=f"in/{n}.npy", relpath=f"{n}.npy", name=f"{n}.vz.parquet", identity="3:1")
        for n in "abcdef"
    ]
    for name, fp, size, written, ident in [
        ("a", "job", 4, 4, "3:1"),  # done
        ("b", "job", 4, 3, "3:1"),  # output shorter than recorded
        ("c", "old", 4, 4, "3:1"),  # another job's
        ("d", "job", 4, None, "3:1"),  # record, no output
        ("e", "job", 4, 4, "3:0"),  # its input changed since
    ]:  # f: nothing at all
        write_record(
            out, CompletionRecord(fp, f"{name}.vz.parquet", "src", 1, size, "-", input_identity=ident)
        )
        if written is not None:
            (tmp_path / f"{name}.vz.parquet").write_bytes(b"x" * written)
    states = shard_states(out, shards, "job")
    assert states == {"a.vz.parquet": "done", "e.vz.parquet": "changed"} | {
        f"{n}.vz.parquet": "todo" for n in "bcdf"
    }
    assert states == {s.name: shard_state(out, s.name, "job", s.identity) for s in shards}
    assert shard_states(str(tmp_path / "nowhere"), shards, "job") == {s.name: "todo" for s in shards}


def test_a_re_run_judges_by_its_jobs_manifest_without_reading_a_record(tmp_path):
    from pipeline.ledger.completion import shard_states
    from pipeline.ledger.manifest import write_manifest

    out = str(tmp_path)
    shards = [Shard(f"in/{n}.npy", f"{n}.npy", f"{n}.vz.parquet", identity="3:1") for n in "abc"]
    for s in shards:
        write_record(out, CompletionRecord("job", s.name, s.source, 1, 4, "h", input_identity="3:1"))
        (tmp_path / s.name).write_bytes(b"abcd")
    found: dict = {}
    assert set(shard_states(out, shards, "job", found=found).values()) == {"done"}
    write_manifest(out, shards, "job", {"kind": "encode"}, found)
    for s in shards:  # records a re-run would fail on, were it to read them
        (tmp_path / DONE / f"{s.name}.json").write_bytes(b"not json")
    (tmp_path / "c.vz.parquet").write_bytes(b"abc")  # ... but a listed size still counts
    changed = [*shards[:1], Shard("in/b.npy", "b.npy", "b.vz.parquet", identity="3:2"), shards[2]]
    found = {}
    states = shard_states(out, changed, "job", found=found)
    assert states == {"a.vz.parquet": "done", "b.vz.parquet": "changed", "c.vz.parquet": "todo"}
    assert found == {"a.vz.parquet": (1, 4, "h")}
    # another job's manifest is not this job's word: the records are read (and fail)
    assert set(shard_states(out, shards, "other").values()) == {"todo"}
    # ... unless the caller read them already (a decode, for its ownership check): not again
    held = {
        s.name: CompletionRecord("other", s.name, s.source, 1, 4, "h", input_identity="3:1") for s in shards
    }
    assert shard_states(out, shards, "other", records=held) == {
        "a.vz.parquet": "done",
        "b.vz.parquet": "done",
        "c.vz.parquet": "todo",  # its output is shorter than recorded
    }


@pytest.mark.parametrize("text", [b"not json", b"[1, 2]", b'{"job_fingerprint": "job"}'])
def test_an_unreadable_record_means_not_done(tmp_path, text):
    (tmp_path / DONE).mkdir()
    (tmp_path / DONE / "x.vz.parquet.json").write_bytes(text)
    (tmp_path / "x.vz.parquet").write_bytes(b"")
    assert read_record(str(tmp_path), "x.vz.parquet") is None
    assert not is_complete(str(tmp_path), "x.vz.parquet", "job")


def test_records_ignore_fields_they_do_not_know(tmp_path):
    data = {
        "job_fingerprint": "j",
        "name": "n",
        "source": "s",
        "rows": 1,
        "bytes": 2,
        "sha256": "h",
        "written_by": "a later version",
    }
    assert CompletionRecord.from_json(json.dumps(data).encode()) == CompletionRecord("j", "n", "s", 1, 2, "h")


def test_committed_files_are_held_packed_and_read_back_exactly():
    from pipeline.ledger.shard import Committed

    sha = hashlib.sha256(b"x").hexdigest()
    c = Committed()
    c["a.vz.parquet"] = (3, 1 << 40, sha)
    c["b.vz.parquet"] = (1, 7, "ABC not hex")  # a hand-edited record: kept as it is
    c.update({"c.vz.parquet": (0, 0, sha.upper())})
    assert dict(c) == {
        "a.vz.parquet": (3, 1 << 40, sha),
        "b.vz.parquet": (1, 7, "ABC not hex"),
        "c.vz.parquet": (0, 0, sha.upper()),
    }
    assert isinstance(c._packed["a.vz.parquet"], bytes) and len(c._packed["a.vz.parquet"]) == 48
    del c["b.vz.parquet"]
    assert len(c) == 2 and "b.vz.parquet" not in c and c.get("b.vz.parquet") is None


def test_progress_tables_stand_for_records_until_the_manifest_is_written(tmp_path):
    """A run stopped before its manifest (a crash, failed shards) leaves the driver's progress
    tables: a re-run judges by them without reading a record, the newest table's word
    standing; another job's tables are not this job's word; the manifest removes them."""
    from pipeline.ledger.completion import shard_states
    from pipeline.ledger.manifest import PROGRESS_DIR, Progress, write_manifest

    out = str(tmp_path)
    shards = [Shard(f"in/{n}.npy", f"{n}.npy", f"{n}.vz.parquet", identity="3:1") for n in "ab"]
    for s in shards:
        write_record(out, CompletionRecord("job", s.name, s.source, 1, 4, "h", input_identity="3:1"))
        (tmp_path / s.name).write_bytes(b"abcd")
        (tmp_path / DONE / f"{s.name}.json").write_bytes(b"not json")  # fails, were it read
    first = Progress(out, "job")
    first.add("a.vz.parquet", "in/a.npy", (1, 4, "old"), "3:0")
    first.flush()
    second = Progress(out, "job")
    second.add("a.vz.parquet", "in/a.npy", (1, 4, "h"), "3:1")  # redone since: the newer word
    second.add("b.vz.parquet", "in/b.npy", (1, 4, "h"), "3:1")
    second.flush()
    other = Progress(out, "other")
    other.add("b.vz.parquet", "in/b.npy", (1, 4, "x"), "3:1")
    other.flush()
    found: dict = {}
    assert shard_states(out, shards, "job", found=found) == {"a.vz.parquet": "done", "b.vz.parquet": "done"}
    assert found == {"a.vz.parquet": (1, 4, "h"), "b.vz.parquet": (1, 4, "h")}
    # the other job's table is its word alone: a is judged by its (unreadable) record
    assert shard_states(out, shards, "other") == {"a.vz.parquet": "todo", "b.vz.parquet": "done"}
    write_manifest(out, shards, "job", {"kind": "encode"}, found)
    assert not (tmp_path / PROGRESS_DIR).exists()
    assert shard_states(out, shards, "job") == {"a.vz.parquet": "done", "b.vz.parquet": "done"}


def test_the_newest_progress_word_withdraws_an_older_done(tmp_path):
    """Tables are streamed, oldest first: a newer row that lists another size hands the file
    to its record, one that names another input makes it changed, and neither stays in what
    the manifest will list."""
    from pipeline.ledger.completion import shard_states
    from pipeline.ledger.manifest import Progress

    out = str(tmp_path)
    shards = [Shard(f"in/{n}.npy", f"{n}.npy", f"{n}.vz.parquet", identity="3:1") for n in "abc"]
    for s in shards:
        write_record(out, CompletionRecord("job", s.name, s.source, 1, 4, "h", input_identity="3:1"))
        (tmp_path / s.name).write_bytes(b"abcd")
    (tmp_path / DONE / "a.vz.parquet.json").write_bytes(b"not json")  # a's record: unreadable
    older = Progress(out, "job")
    for s in shards:
        older.add(s.name, s.source, (1, 4, "h"), "3:1")
    older.flush()
    newer = Progress(out, "job")
    newer.add("a.vz.parquet", "in/a.npy", (1, 9, "h"), "3:1")  # another size: its record decides
    newer.add("b.vz.parquet", "in/b.npy", (1, 4, "h"), "3:0")  # another input
    newer.flush()
    found: dict = {}
    states = shard_states(out, shards, "job", found=found)
    assert states == {"a.vz.parquet": "todo", "b.vz.parquet": "changed", "c.vz.parquet": "done"}
    assert found == {"c.vz.parquet": (1, 4, "h")}
