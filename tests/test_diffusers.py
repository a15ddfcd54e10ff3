"""Pretrained autoencoders: a diffusers AutoencoderKL (tiny, randomly initialized from a
config: no download) imported as a vaezip checkpoint, archived and decoded by the jobs."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")  # the optional extra; CI installs it

from jobs import import_diffusers  # noqa: E402
from jobs._cli import run_main  # noqa: E402
from pipeline.codec.format import read_meta  # noqa: E402
from pipeline.model.checkpoint import load_checkpoint  # noqa: E402
from tests.helpers import decode, direct_reconstructions, encode  # noqa: E402

SCALE, SHIFT = 0.5, 0.1


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    ).eval()
    folder = tmp_path_factory.mktemp("pipeline") / "vae"
    vae.save_pretrained(str(folder))
    return vae, folder


@pytest.fixture(scope="module")
def imported(tiny_vae, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ckpt") / "sd-vae")
    assert (
        run_main(
            import_diffusers.main,
            ["--source", str(tiny_vae[1].parent), "--subfolder", "vae", "--output", out],
        )
        == 0
    )
    return out


def test_latents_are_what_the_diffusion_model_expects(tiny_vae, imported):
    vae, _ = tiny_vae
    ckpt = load_checkpoint(imported)
    assert ckpt.config.kind == "diffusers" and ckpt.config.downsample_factor == 2
    assert (ckpt.config.scaling_factor, ckpt.config.shift_factor) == (SCALE, SHIFT)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        post = ckpt.model.encode(x)
        dist = vae.encode(x * 2 - 1).latent_dist
        expected = (dist.mean - SHIFT) * SCALE
        assert torch.allclose(post.mean, expected, atol=1e-6)
        assert torch.allclose(post.logvar, dist.logvar + 2 * np.log(SCALE), atol=1e-5)
        back = ckpt.model.decode(post.mean, (32, 32))
        assert torch.allclose(back, (vae.decode(dist.mean).sample + 1) / 2, atol=1e-5)


def test_odd_sizes_are_padded_and_cropped(imported):
    ckpt = load_checkpoint(imported)
    with torch.inference_mode():
        post = ckpt.model.encode(torch.rand(1, 3, 15, 21))
        assert tuple(post.mean.shape) == (1, 4, 8, 11) == (1, *ckpt.model.latent_shape((3, 15, 21)))
        assert tuple(ckpt.model.decode(post.mean, (15, 21)).shape) == (1, 3, 15, 21)


@pytest.mark.usefixtures("local_ray")
@pytest.mark.timeout(300)
def test_archive_and_decode_with_a_pretrained_vae(imported, photos, tmp_path):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(photos / "heldout", imported, arch) == 0
    meta = read_meta(str(next(arch.glob("*.vz.parquet"))))
    assert meta.model_config["kind"] == "diffusers"
    assert decode(arch, imported, rec) == 0
    expected = direct_reconstructions(arch, imported)
    got = {}
    import pyarrow.parquet as pq

    for npy in sorted(rec.glob("*.npy")):
        keys = pq.read_table(str(npy)[:-4] + ".keys.parquet")["key"].to_pylist()
        got.update(zip(keys, np.load(npy), strict=True))
    assert got.keys() == expected.keys() and len(got) > 0
    assert all(np.array_equal(got[k], expected[k]) for k in got)


def test_a_folder_without_a_vae_is_one_clear_line(tmp_path, capsys):
    assert run_main(import_diffusers.main, ["--source", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a local diffusers AutoencoderKL folder" in err and "\n" not in err


@pytest.mark.usefixtures("local_ray")
@pytest.mark.timeout(300)
def test_an_sd_like_posterior_falls_back_to_8_bits_and_the_loss_bound_does_not(tiny_vae, photos, tmp_path):
    """The SD VAEs (KL weight 1e-6) predict log-variances far below their latents' spread: the
    sigma step would need far more than 256 levels, so every channel falls back to 8 bits."""
    import json

    vae, folder = tiny_vae
    sd_like = diffusers.AutoencoderKL.from_pretrained(str(folder))
    with torch.no_grad():
        sd_like.quant_conv.bias[4:] = -30.0  # log-variance channels: sigma ~ 3e-7
    sd_like.save_pretrained(str(tmp_path / "sd" / "vae"))
    ckpt = str(tmp_path / "ckpt")
    argv = ["--source", str(tmp_path / "sd"), "--subfolder", "vae", "--output", ckpt]
    assert run_main(import_diffusers.main, argv) == 0
    sizes = {}
    for name, extra in (("posterior", ("--quantizer", "posterior")), ("loss", ())):  # loss: the default
        arch = tmp_path / name
        assert encode(photos / "heldout", ckpt, arch, *extra) == 0
        q = json.loads((arch / "job.json").read_text())["quantizer"]
        sizes[name] = sum(p.stat().st_size for p in arch.glob("*.vz.parquet"))
        if name == "posterior":
            assert q["levels"] == [256] * 4  # the 8-bit fall-back on every channel
        else:
            assert q["target_loss_db"] == 0.1 and q["measured_loss_db"] <= 0.1 and max(q["levels"]) < 256
    assert sizes["loss"] < sizes["posterior"]
