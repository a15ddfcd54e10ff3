"""Outputs the driver cannot see are an error, not an empty archive: encode into memory:// (each
worker process its own memory) exited 0 with "encoded 100 shards" and a manifest of nulls."""

import pytest

from jobs import encode as encode_job
from jobs._cli import run_main
from jobs._driver import check_visible
from pipeline.core.errors import ConfigError


def test_memory_urls_are_refused_before_any_worker_starts(
    tmp_path, digits_dir, digits_ckpt, capsys, monkeypatch
):
    import pipeline.run.runner as runner

    monkeypatch.setattr(runner, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    for args in (
        ["--input", digits_dir, "--output", "memory://arch"],
        ["--input", "memory://data", "--output", str(tmp_path / "arch")],
    ):
        assert run_main(encode_job.main, [*args, "--checkpoint", digits_ckpt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "lives in this driver's memory: the workers run in other processes" in err[0]


def test_records_the_driver_cannot_see_are_an_error(tmp_path):
    out = tmp_path / "arch"
    done = {"a.vz.parquet": (3, 100, "0" * 64), "b.vz.parquet": (1, 50, "1" * 64)}  # name: recorded
    with pytest.raises(
        ConfigError, match=r"2 of 2 shards were reported written, but the driver does not see"
    ):
        check_visible(str(out), done)
    (out / "_done").mkdir(parents=True)
    (out / "_done" / "a.vz.parquet.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"1 of 2 shards .* \(first: b\.vz\.parquet\)"):
        check_visible(str(out), done)
    (out / "_done" / "b.vz.parquet.json").write_text("{}")
    check_visible(str(out), done)  # all visible: nothing to say


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_an_output_folder_the_workers_do_not_share_is_refused_before_any_shard(
    tmp_path, digits_dir, digits_ckpt, capsys, monkeypatch
):
    from tests.bound_worker import BlindWorker

    monkeypatch.setattr(encode_job, "EncodeWorker", BlindWorker)
    arch = tmp_path / "arch"
    assert (
        run_main(encode_job.main, ["--input", digits_dir, "--checkpoint", digits_ckpt, "--output", str(arch)])
        == 2
    )
    err = capsys.readouterr().err
    assert "is not shared with 2 of the 2 workers" in err
    assert not list(arch.glob("*.vz.parquet")) and not list(arch.glob(".vz-marker-*"))
