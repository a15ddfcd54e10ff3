"""Bounded retries with backoff, on a real local Ray: a failure that can pass (a dropped
connection) is retried after a growing wait; corrupt input is reported at once."""

import pytest

from pipeline.ledger.shard import Shard
from pipeline.run.runner import PoolConfig, run
from tests.flaky_worker import FlakyWorker

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("local_ray")]


def test_transient_failures_are_retried_with_backoff_and_corrupt_input_is_not(tmp_path):
    shards = [Shard(f"s3://bucket/{n}", n, n) for n in ["ok", "flaky", "down", "corrupt", "oom"]]
    spec = {"log": str(tmp_path), "fail_times": {"flaky": 2, "down": 99}}
    config = PoolConfig(
        actors=2, max_attempts=3, retry_backoff_s=0.3, use_gpus=False
    )  # CPU actors, even beside a GPU
    results = run(FlakyWorker, spec, config, lambda pool: {r.name: r for r in pool.map(shards)})

    assert results["ok"].ok and results["ok"].attempts == 1
    assert results["flaky"].ok and results["flaky"].attempts == 3  # failed twice, then ok
    times = [float(t) for t in (tmp_path / "flaky").read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # backoff doubles
    assert not results["down"].ok and results["down"].attempts == 3  # bounded
    assert "failed 3 times" in results["down"].error
    assert "connection reset by peer" in results["down"].error
    assert not results["corrupt"].ok and results["corrupt"].attempts == 1  # not retried
    assert results["corrupt"].error == "s3://bucket/corrupt row 3: corrupt input"
    assert len((tmp_path / "corrupt").read_text().split()) == 1
    # an error with no message still says what it was
    assert results["oom"].error == "failed 3 times; last: MemoryError"


def test_a_worker_dying_during_calibration_is_replaced_and_calibration_retried(tmp_path):
    spec = {"log": str(tmp_path), "fail_times": {}}
    config = PoolConfig(actors=1, max_attempts=3)
    assert run(FlakyWorker, spec, config, lambda pool: pool.call_one("calibrate", 2)) == 3


def test_calibration_that_keeps_killing_workers_is_one_clear_error(tmp_path):
    from pipeline.core.errors import ConfigError

    spec = {"log": str(tmp_path), "fail_times": {}}
    with pytest.raises(ConfigError, match="calibrate failed 2 times: the worker died each time"):
        run(
            FlakyWorker,
            spec,
            PoolConfig(actors=1, max_attempts=2),
            lambda pool: pool.call_one("calibrate", 9),
        )


def test_a_dead_actor_loses_only_the_shards_it_held_and_is_replaced_once(tmp_path):
    """Two shards wait at an actor (``in_flight``), so it never idles a round trip between
    them; when it dies, both go to its one replacement, and nothing else is lost."""
    shards = [Shard(f"s3://bucket/{n}", n, n) for n in ["die", "queued", "later"]]
    spec = {"log": str(tmp_path), "fail_times": {}}
    config = PoolConfig(actors=1, in_flight=2, retry_backoff_s=0.1, use_gpus=False)

    def body(pool):
        results = {r.name: r for r in pool.map(shards)}
        return results, len(pool.actors)

    results, actors = run(FlakyWorker, spec, config, body)
    assert all(r.ok for r in results.values())
    assert results["die"].attempts == 2  # died once, then done by the replacement
    # handed to the dead actor with "die" (its second slot), it never ran there: lost with it
    assert results["queued"].attempts == 2 and len((tmp_path / "queued").read_text().split()) == 1
    assert results["later"].attempts == 1
    assert actors == 1  # the two lost shards did not start two replacements
