"""A Ray address with nobody there: one clear line at once (not after Ray's minute of
connection retries). Its own module: no Ray may be running in this process."""

import pytest
import ray

from jobs import encode as encode_job
from jobs._cli import run_main


@pytest.mark.timeout(120)
def test_ray_address_with_nobody_there_is_one_clear_line(tmp_path, digits_dir, digits_ckpt, capsys):
    assert not ray.is_initialized()
    assert (
        run_main(
            encode_job.main,
            [
                "--input",
                digits_dir,
                "--checkpoint",
                digits_ckpt,
                "--output",
                str(tmp_path / "a"),
                "--address",
                "127.0.0.1:1",
            ],
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "\n" not in err
