from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from jobs._cli import run_main
from pipeline.data import demo_data
from pipeline.model.checkpoint import save_checkpoint
from pipeline.model.nets import ConvConfig, MLPConfig, build_model
from pipeline.train.training import TrainSettings, train


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return demo_data.digits()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory, digits) -> str:
    """The real digits as four .npz shards (image uint8 8x8 + label)."""
    folder = tmp_path_factory.mktemp("digits")
    demo_data.write_npz_shards(str(folder), digits[0], digits[1], 512, "digits")
    return str(folder)


@pytest.fixture(scope="session")
def trained_mlp(digits):
    """A small MLP VAE trained for a few seconds on the real digits."""
    torch.manual_seed(0)
    data = (digits[0].reshape(len(digits[0]), -1) / 255.0).astype(np.float32)
    model = build_model(MLPConfig(input_dim=64, latent_dim=8, hidden_dims=(128,)))
    train(model, data, TrainSettings(epochs=40, warmup_steps=100), torch.device("cpu"))
    return model, data


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory, trained_mlp):
    path = str(tmp_path_factory.mktemp("ckpt") / "digits")
    save_checkpoint(trained_mlp[0], path)
    return path


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    from jobs import prepare_demo

    out = tmp_path_factory.mktemp("demo")
    assert run_main(prepare_demo.main, ["--output", str(out), "--crop", "32", "--rows-per-shard", "300"]) == 0
    return out / "photos"


@pytest.fixture(scope="session")
def photos_ckpt(tmp_path_factory, photos):
    from pipeline.train.dataset import read_samples, stack_for_model

    torch.manual_seed(0)
    config = ConvConfig(in_channels=3, latent_channels=4, base_channels=8)
    data, _ = stack_for_model(read_samples(str(photos / "train"), max_rows=300), config)
    model = build_model(config)
    train(model, data, TrainSettings(epochs=2, batch_size=32, warmup_steps=10), torch.device("cpu"))
    path = str(tmp_path_factory.mktemp("ckpt") / "photos")
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def crop_shards(tmp_path_factory, photos):
    """8 .npy shards of 400 real 32x32 photo crops: slow enough to be hit mid-shard."""
    from pipeline.train.dataset import read_samples

    crops = np.stack([s.array for s in read_samples(str(photos / "train"), max_rows=3200)])
    out = tmp_path_factory.mktemp("crops")
    for i in range(8):
        np.save(out / f"crops-{i}.npy", crops[i * 400 : (i + 1) * 400])
    return str(out)


LOCAL_RAY = dict(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False)
_shared: dict = {}  # set while the Ray that local_ray started is up


def _stop_shared_ray() -> None:
    if _shared and ray.is_initialized():
        ray.shutdown()
    _shared.clear()


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray: 2 CPUs and no GPU, as on the CI machine, even on a GPU machine
    (tests/test_cuda.py starts its own with the GPUs). Modules that use it one after another
    share one (starting Ray costs seconds a module); a module that does not use it finds no Ray
    running (``_no_shared_ray``), so it starts its own, or its jobs do, as before."""
    if not (_shared and ray.is_initialized()):
        ray.init(**LOCAL_RAY)
        _shared["up"] = True
    yield


@pytest.fixture(scope="module", autouse=True)
def _no_shared_ray(request):
    """Stops the shared Ray before a module none of whose tests use ``local_ray``."""
    mine = [item for item in request.session.items if item.module is request.module]
    if not any("local_ray" in item.fixturenames for item in mine):
        _stop_shared_ray()
    yield


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_the_end():
    yield
    _stop_shared_ray()
