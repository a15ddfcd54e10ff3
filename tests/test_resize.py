"""Images made the size a latent cache wants (pipeline.data.resize), checked against Pillow
doing the same by hand, and through the real encode (buckets, flips, recorded columns)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from pipeline.core.errors import InputError
from pipeline.data.resize import Preprocess, prepare, sdxl_buckets


def test_a_fixed_size_is_pillows_lanczos_resize_then_a_center_crop():
    cat = data.chelsea()  # 300 x 451
    ((x, key, cols),) = prepare(cat, "cat", Preprocess(size=(64, 64)), "cat.png", 0)
    by_hand = np.asarray(Image.fromarray(cat).resize((96, 64), Image.Resampling.LANCZOS))[:, 16:80]
    assert np.array_equal(x, by_hand) and key == "cat"
    assert cols == {
        "original_size": [300, 451],
        "crop_top_left": [0, 16],
        "target_size": [64, 64],
        "flipped": False,
    }
    ((bent, _, c),) = prepare(cat, "cat", Preprocess(size=(64, 64), crop="none"), "cat.png", 0)
    assert np.array_equal(bent, np.asarray(Image.fromarray(cat).resize((64, 64), Image.Resampling.LANCZOS)))
    assert c["crop_top_left"] == [0, 0]


def test_buckets_follow_the_images_shape_and_flips_mirror_it():
    assert {(1024, 1024), (896, 1152), (1152, 896)} <= set(sdxl_buckets(1024 * 1024))
    config = Preprocess(buckets=((64, 64), (64, 96), (96, 64)), flip=True)
    wide = np.random.default_rng(0).integers(0, 256, (100, 160, 3), dtype=np.uint8)
    (x, k, c), (m, km, cm) = prepare(wide, "w", config, "w.png", 3)
    assert x.shape == (64, 96, 3) and c["target_size"] == [64, 96]  # 1.6 is nearest 1.5
    assert km == "w#flip" and cm["flipped"] and np.array_equal(m, x[:, ::-1])
    tall = prepare(wide.transpose(1, 0, 2), "t", config, "t.png", 3)[0][0]
    assert tall.shape == (96, 64, 3)


def test_random_crops_repeat_for_a_key_and_small_images_are_refused_or_enlarged():
    cat = data.chelsea()
    config = Preprocess(size=(64, 64), crop="random", seed=5)
    a, b = prepare(cat, "a", config, "f", 0)[0], prepare(cat, "a", config, "f", 0)[0]
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    others = {tuple(prepare(cat, k, config, "f", 0)[0][2]["crop_top_left"]) for k in "bcdefgh"}
    assert len(others) > 1  # the key moves the crop
    with pytest.raises(InputError, match=r"cat\.png row 7: image 451x300 is smaller than its target 512x512"):
        prepare(cat, "c", Preprocess(size=(512, 512)), "cat.png", 7)
    assert prepare(cat, "c", Preprocess(size=(512, 512), upscale=True), "cat.png", 7)[0][0].shape == (
        512,
        512,
        3,
    )


def test_sixteen_bit_images_keep_their_dtype():
    scan = (np.arange(120 * 80, dtype=np.uint16).reshape(120, 80) * 7) % 65535
    ((x, _, _),) = prepare(scan.astype(np.uint16), "s", Preprocess(size=(40, 40)), "s.png", 0)
    assert x.dtype == np.uint16 and x.shape == (40, 40)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_an_encode_with_buckets_and_flips_records_what_it_did(tmp_path, photos_ckpt):
    import torch

    from pipeline.codec.format import archive_files, read_meta
    from pipeline.data.archive import iter_latents
    from pipeline.model.checkpoint import load_checkpoint
    from tests.helpers import decode, encode

    rocket = np.ascontiguousarray(np.rot90(data.rocket()))  # standing up: 640 x 427
    images = {"cat": data.chelsea(), "coffee": data.coffee(), "rocket": rocket}  # 3:2, 3:2, 2:3
    (tmp_path / "in").mkdir()
    for name, x in images.items():
        Image.fromarray(x).save(tmp_path / "in" / f"{name}.png")
    arch = tmp_path / "arch"
    args = ["--buckets", "64x64,96x64,64x96", "--flip", "--max-latent-error", "0.01"]
    assert encode(tmp_path / "in", photos_ckpt, arch, *args) == 0
    (name,) = archive_files(str(arch))
    t = pq.read_table(name).to_pydict()
    assert t["vz_key"] == ["cat", "cat#flip", "coffee", "coffee#flip", "rocket", "rocket#flip"]
    assert t["target_size"][::2] == [[64, 96], [64, 96], [96, 64]] and t["flipped"] == [False, True] * 3
    assert t["original_size"][::2] == [[300, 451], [400, 600], [640, 427]] and t["path"][0] == "cat.png"
    assert [s for s in t["vz_latent_shape"]][::2] == [[4, 16, 24], [4, 16, 24], [4, 24, 16]]
    # the flipped row's latent is the encoder's latent of the mirrored image, quantized
    model = load_checkpoint(photos_ckpt).model
    config = Preprocess(buckets=((64, 64), (64, 96), (96, 64)), flip=True)
    mirrored = prepare(images["cat"], "cat", config, "cat.png", 0)[1][0]
    with torch.inference_mode():
        z = (
            model.encode(torch.from_numpy(mirrored.transpose(2, 0, 1)[None] / np.float32(255)))
            .mean[0]
            .numpy()
        )
    stored = {k: v for b in iter_latents(name) for k, v in zip(b.keys, b.latents, strict=True)}
    step = np.asarray(read_meta(name).quantizer.step)[:, None, None]
    assert np.all(np.abs(stored["cat#flip"] - z) <= step / 2 + 1e-5)
    assert json.loads((arch / "job.json").read_text())["settings"]["preprocess"]["flip"] is True
    rec = tmp_path / "rec"
    assert decode(arch, photos_ckpt, rec, "--format", "parquet") == 0  # the columns pass through
    back = pq.read_table(rec / "images-00000.parquet").to_pydict()
    assert back["crop_top_left"] == t["crop_top_left"] and back["flipped"] == t["flipped"]
    import datasets  # the new columns carry their features to the downstream library

    loaded = datasets.Dataset.from_parquet(str(rec / "images-00000.parquet"))
    assert loaded.features["flipped"] == datasets.Value("bool")
    assert loaded.features["original_size"].feature == datasets.Value("int64")
    assert loaded[1]["flipped"] is True and loaded[0]["original_size"] == [300, 451]
