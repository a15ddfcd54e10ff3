"""A worker node lost mid-job, on a three-raylet cluster on this machine
(``ray.cluster_utils.Cluster``: a head with no CPUs and two 1-CPU worker nodes).

The actor on the lost node dies with it; its shard goes to the surviving actor, the replacement
that cannot be placed any more never holds up the job, and the archive equals a clean run's.
"""

import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.faults import files, processes, wait_gone
from tests.helpers import encode

pytestmark = pytest.mark.timeout(300)
SLOW = ("--batch-rows", "1")  # seconds per shard: the loss lands while shards are running


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "_system_config": {
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 3,
            },
        },
    )
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, configure_logging=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_worker_node_removed_mid_job(tmp_path, cluster, crop_shards, photos_ckpt, caplog):
    c, workers = cluster
    clean = tmp_path / "clean"
    assert encode(crop_shards, photos_ckpt, clean, *SLOW) == 0
    wait_gone("ray::EncodeWorker")  # the clean run's pool is gone

    removed = threading.Event()

    def remove_when_busy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(processes("ray::EncodeWorker.process")) == 2:  # both nodes mid-shard
                c.remove_node(workers[1], allow_graceful=False)
                removed.set()
                return
            time.sleep(0.01)

    arch = tmp_path / "arch"
    remover = threading.Thread(target=remove_when_busy, daemon=True)
    remover.start()
    assert encode(crop_shards, photos_ckpt, arch, *SLOW) == 0
    remover.join()
    assert removed.is_set(), "the node was not removed while both actors were busy"
    assert "actor died on shard" in caplog.text  # the job saw the loss
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2  # head + one worker left
    assert files(arch, "*.vz.parquet") == files(clean, "*.vz.parquet")
    assert not list(arch.rglob("*.tmp"))
