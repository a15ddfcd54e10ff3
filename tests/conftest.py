from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import demo_data
from pipeline.checkpoint import save_checkpoint
from pipeline.models import MLPConfig, build_model
from pipeline.training import TrainSettings, train


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
