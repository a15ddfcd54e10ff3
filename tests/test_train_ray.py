"""jobs.train --workers: data-parallel training on Ray Train workers that stream the shards."""

import json

import pytest
import ray

from jobs import train
from jobs._cli import run_main
from pipeline.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def fresh_ray():
    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


def test_two_workers_stay_in_sync_and_a_second_run_resumes_from_the_checkpoint(
    tmp_path, digits_dir, fresh_ray, capsys
):
    out = tmp_path / "ckpt"
    argv = ["--input", digits_dir, "--output", str(out), "--workers", "2", "--latent", "4"]
    argv += ["--batch-size", "32", "--checkpoint-every", "3"]
    assert run_main(train.main, [*argv, "--max-steps", "6"]) == 0
    first = json.loads((out / "report.json").read_text())
    assert first["workers"] == 2 and first["steps"] == 6 and first["resumed_from"] == 0
    assert first["workers_in_sync"] is True  # every worker's weights digest agreed at each checkpoint
    before = load_checkpoint(str(out))
    assert before.config.kind == "mlp"

    assert run_main(train.main, [*argv, "--max-steps", "9"]) == 0
    second = json.loads((out / "report.json").read_text())
    assert second["steps"] == 9 and second["resumed_from"] == 6 and second["workers_in_sync"] is True
    assert load_checkpoint(str(out)).fingerprint != before.fingerprint
    assert "resumed from step 6" in capsys.readouterr().out
