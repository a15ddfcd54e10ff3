"""GPU pinning without a GPU: Ray is told it has two GPUs, so each actor gets one GPU id.

Ray hands every ``num_gpus=1`` actor its own ``CUDA_VISIBLE_DEVICES``; with no CUDA device
behind the id, the worker falls back to the CPU and the job still completes.
"""

import json

import pytest
import ray
import torch

from pipeline.run.runner import PoolConfig, run
from pipeline.workers.encode import EncodeSpec, EncodeWorker
from tests.helpers import encode

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", autouse=True)
def ray_with_declared_gpus():
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_each_actor_holds_a_distinct_gpu_and_falls_back_to_cpu(tmp_path, digits_ckpt):
    spec = EncodeSpec(checkpoint=digits_ckpt, output=str(tmp_path))
    shape, infos = run(EncodeWorker, spec, PoolConfig(), lambda pool: (pool.shape, pool.infos))
    assert (shape.actors, shape.num_gpus) == (2, 1)  # pool size from the 2 GPUs
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "1"]
    assert len({i["pid"] for i in infos}) == 2
    for info in infos:  # CUDA where it is, else CPU
        assert info["device"] == ("cuda" if info["cuda_available"] else "cpu")
    if not torch.cuda.is_available():
        assert all(i["device"] == "cpu" for i in infos)


def test_cpu_only_pool_ignores_the_gpus(tmp_path, digits_ckpt):
    spec = EncodeSpec(checkpoint=digits_ckpt, output=str(tmp_path), device="cpu")
    shape, infos = run(EncodeWorker, spec, PoolConfig(use_gpus=False), lambda pool: (pool.shape, pool.infos))
    assert (shape.actors, shape.num_gpus) == (2, 0)
    assert all(i["device"] == "cpu" and i["cuda_visible_devices"] in (None, "") for i in infos)


def test_encode_job_completes_on_declared_gpus(tmp_path, digits_dir, digits_ckpt):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    manifest = json.loads((arch / "manifest.json").read_text())
    assert manifest["rows"] == 1797 and manifest["files"] == 4
