"""Tiles in context: a tile's latents are those of the whole image, and each tile decodes to the
whole image's pixels (pipeline.data.tiles, pipeline.model.reach)."""

import numpy as np
import pytest
import torch

from pipeline.core.value_range import ValueRange
from pipeline.data.archive import LatentBatch, SampleDecoder
from pipeline.data.readers import ReadOptions
from pipeline.data.samples import SampleLayout
from pipeline.data.tiles import by_image, context_windows, split_tile_key, tile_key
from pipeline.ledger.completion import Stopwatch
from pipeline.ledger.plan import plan_shards
from pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from pipeline.model.nets import ConvConfig, build_model
from pipeline.model.reach import decoder_reach, encoder_reach
from pipeline.workers.encoder import Encoder


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ConvConfig(in_channels=3, latent_channels=4, base_channels=8)).eval()
    path = str(tmp_path_factory.mktemp("ckpt") / "conv")
    save_checkpoint(model, path)
    return load_checkpoint(path)


def test_the_reach_of_the_conv_vae_is_its_layers():
    for factor, encoder in ((4, 20), (8, 40)):
        model = build_model(ConvConfig(latent_channels=4, base_channels=8, downsample_factor=factor))
        # two stride-2 (three) 3x3 convolutions, then four 3x3 at the lowest resolution: 1 + 2 +
        # 4 * 4 = 19 pixels (1 + 2 + 4 + 4 * 8 = 39), rounded up to the factor
        assert encoder_reach(model, 64) == encoder
        # 3x3 + four 3x3 at the latents' resolution, 3x3 there again, a half cell at the next
        assert decoder_reach(model, 16) == 7
        assert encoder_reach(model, 8) == 8 and decoder_reach(model, 3) == 3  # capped


def _tiles_in_context(ckpt, image, tmp_path, tile, margin):
    np.save(tmp_path / "img.npy", image[None])
    (shard,) = plan_shards(str(tmp_path))
    enc = Encoder(
        ckpt,
        torch.device("cpu"),
        ReadOptions(),
        None,
        Stopwatch(),
        ValueRange(0, 255),
        tile,
        torch.float32,
        margin,
    )
    return [
        (k, m.reshape(s), lay)
        for e in enc.encoded(shard)
        for k, m, s, lay in zip(e.keys, e.means, e.latent_shapes, e.layouts, strict=True)
    ]


def test_tiles_encoded_in_context_have_the_whole_images_latents(conv, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole = conv.model.encode(torch.from_numpy(image.transpose(2, 0, 1)[None] / np.float32(255))).mean[0]
    whole = whole.detach().numpy()
    tiles = _tiles_in_context(conv, image, tmp_path, 32, 20)
    assert [k for k, _, _ in tiles] == [tile_key("img:0", y, x) for y in (0, 32, 64) for x in (0, 32, 64)]
    assert [lay.shape for _, _, lay in tiles][-3:] == [(6, 32, 3), (6, 32, 3), (6, 26, 3)]  # own pixels
    for key, z, _ in tiles:
        _, y, x = split_tile_key(key)
        np.testing.assert_allclose(
            z, whole[:, y // 4 : y // 4 + z.shape[1], x // 4 : x // 4 + z.shape[2]], atol=2e-5
        )
    # alone (no margin) a tile's edge cells are not the whole image's: the check above can fail
    alone = dict((k, z) for k, z, _ in _tiles_in_context(conv, image, tmp_path, 32, 0))
    assert np.abs(alone["img:0@32,32"] - whole[:, 8:16, 8:16]).max() > 1e-3


def _image_of_tiles(latent, tile, factor, shape):
    """A whole image's latents as the archive stores its tiles, in two batches."""
    keys, zs, layouts = [], [], []
    for y in range(0, shape[0], tile):
        for x in range(0, shape[1], tile):
            h, w = min(tile, shape[0] - y), min(tile, shape[1] - x)
            keys.append(tile_key("k", y, x))
            zs.append(
                latent[
                    :,
                    y // factor : y // factor + -(-h // factor),
                    x // factor : x // factor + -(-w // factor),
                ]
            )
            layouts.append(SampleLayout((h, w, 3), "uint8"))
    half = len(keys) // 2
    return [
        LatentBatch("a.vz.parquet", 0, keys[:half], zs[:half], layouts[:half], {"n": list(range(half))}),
        LatentBatch(
            "a.vz.parquet", half, keys[half:], zs[half:], layouts[half:], {"n": list(range(half, len(keys)))}
        ),
    ]


def test_tiles_decoded_in_context_are_the_whole_images_pixels(conv):
    latent = np.random.default_rng(1).standard_normal((4, 18, 23)).astype(np.float32)
    shape = (70, 90)
    whole = conv.model.decode(torch.from_numpy(latent[None]), shape)[0].detach().clamp(0, 1).numpy()
    (image,) = by_image(_image_of_tiles(latent, 32, 4, shape))  # one image from two batches
    assert image.start == 0 and len(image.keys) == 9 and image.columns["n"] == list(range(9))
    decoder = SampleDecoder(conv, torch.device("cpu"))
    for reach, exact in ((7, True), (0, False)):
        outputs = decoder.run_windows(context_windows(image, 4, reach), image.layouts)
        got = np.zeros_like(whole)
        for idx, x in outputs:
            for i, t in zip(idx, x, strict=True):
                _, y, x0 = split_tile_key(image.keys[i])
                got[:, y : y + t.shape[1], x0 : x0 + t.shape[2]] = t
        assert (np.abs(got - whole).max() < 2e-5) == exact


def test_tiles_off_the_latent_grid_are_decoded_alone():
    z = np.zeros((4, 3, 3), np.float32)
    lay = SampleLayout((10, 10, 3), "uint8")
    image = LatentBatch("a", 0, ["k@0,0", "k@0,10"], [z, z], [lay, lay], {})
    assert context_windows(image, 4, 2) is None  # 10 is not a multiple of 4
