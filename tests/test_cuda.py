"""The encode -> decode round trip on a real CUDA GPU. Skipped where there is none; run on a
GPU machine with ``pytest -m gpu``."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from pipeline.run.runner import PoolConfig, run
from pipeline.workers.encode import EncodeSpec, EncodeWorker
from tests.helpers import decode, direct_reconstructions, encode

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("gpu_ray"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]


@pytest.fixture(scope="module")
def gpu_ray():
    """A local Ray with the machine's GPUs (the suite's ``local_ray`` has none)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_actors_run_on_cuda(tmp_path, digits_ckpt):
    spec = EncodeSpec(checkpoint=digits_ckpt, output=str(tmp_path))
    infos = run(EncodeWorker, spec, PoolConfig(), lambda pool: pool.infos)
    assert len(infos) == torch.cuda.device_count()
    assert all(i["device"] == "cuda" for i in infos)
    assert len({i["cuda_visible_devices"] for i in infos}) == len(infos)


def test_digits_round_trip_on_cuda(tmp_path, digits_dir, digits_ckpt, digits):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(digits_dir, digits_ckpt, arch) == 0
    assert decode(arch, digits_ckpt, rec) == 0
    direct = direct_reconstructions(str(arch), digits_ckpt, device="cuda")
    recs = np.concatenate([np.load(rec / f"digits-{i:05d}.npy") for i in range(4)])
    keys = [
        k for i in range(4) for k in pq.read_table(rec / f"digits-{i:05d}.keys.parquet")["key"].to_pylist()
    ]
    assert len(set(keys)) == 1797
    assert all(np.array_equal(direct[k], r) for k, r in zip(keys, recs, strict=True))
    psnr = 10 * np.log10(255**2 / ((recs.astype(float) - digits[0]) ** 2).mean(axis=(1, 2)))
    assert psnr.mean() > 15
