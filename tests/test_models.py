import json

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.model.nets import (
    ConvConfig,
    MLPConfig,
    build_model,
    config_from_dict,
    config_to_dict,
)


def test_mlp_shapes_any_width():
    model = build_model(MLPConfig(input_dim=784, latent_dim=12, hidden_dims=(64, 32)))
    post = model.encode(torch.rand(5, 784))
    assert post.mean.shape == post.logvar.shape == (5, 12)
    assert model.decode(post.mean).shape == (5, 784)


@pytest.mark.parametrize("factor", [4, 8])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (37, 50), (9, 70)])
def test_conv_pads_and_crops_back_exactly(factor, channels, size):
    model = build_model(
        ConvConfig(in_channels=channels, latent_channels=4, downsample_factor=factor, base_channels=8)
    )
    x = torch.rand(2, channels, *size)
    post = model.encode(x)
    expected = model.latent_shape((channels, *size))
    assert tuple(post.mean.shape[1:]) == expected
    assert expected[1] == -(-size[0] // factor) and expected[2] == -(-size[1] // factor)
    assert model.decode(post.mean, size).shape == x.shape


def test_conv_padding_is_invisible_in_the_crop():
    """Pixels past the crop must not leak into the cropped output: decoding the latent of a
    padded image and cropping gives the same thing as decoding with size."""
    model = build_model(ConvConfig(in_channels=1, base_channels=8)).eval()
    z = model.encode(torch.rand(1, 1, 30, 30)).mean
    full = model.decode(z)
    assert full.shape[-2:] == (32, 32)
    assert torch.equal(model.decode(z, (30, 30)), full[..., :30, :30])


def test_conv_rejects_wrong_channels():
    model = build_model(ConvConfig(in_channels=3, base_channels=8))
    with pytest.raises(ValueError, match="expected"):
        model.encode(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize(
    "config", [MLPConfig(input_dim=10, hidden_dims=(4,)), ConvConfig(in_channels=1, downsample_factor=8)]
)
def test_config_json_round_trip(config):
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config


@pytest.mark.parametrize(
    "data, match",
    [
        ({"kind": "transformer"}, "unknown model kind"),
        ({"kind": "mlp", "input_dim": 4, "evil": 1}, "unknown mlp config fields"),
        ({"kind": "conv", "downsample_factor": 3}, "downsample_factor"),
        ({"kind": "conv", "in_channels": 4}, "in_channels"),
        ({"kind": "mlp", "input_dim": 4, "likelihood": "poisson"}, "likelihood"),
        ({"kind": "mlp"}, "bad mlp config"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_configs_are_refused(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)
