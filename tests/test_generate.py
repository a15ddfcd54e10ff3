"""jobs.generate: the VAE as a generative model, z from the prior through the decoder."""

import numpy as np
import torch
from PIL import Image

from jobs import generate as generate_job
from jobs._cli import run_main
from pipeline.model.checkpoint import load_checkpoint


def test_samples_are_the_decoder_of_prior_draws(tmp_path, digits_ckpt):
    out = tmp_path / "gen"
    assert (
        run_main(
            generate_job.main,
            [
                "--checkpoint",
                digits_ckpt,
                "--output",
                str(out),
                "--count",
                "10",
                "--seed",
                "3",
                "--temperature",
                "0.7",
            ],
        )
        == 0
    )
    samples = np.load(out / "samples.npy")
    assert samples.shape == (10, 8, 8) and samples.dtype == np.uint8
    ckpt = load_checkpoint(digits_ckpt)
    z = torch.randn((10, ckpt.config.latent_dim), generator=torch.Generator().manual_seed(3)) * 0.7
    with torch.inference_mode():
        x = ckpt.model.decode(z).float().clamp(0, 1).numpy()
    assert np.array_equal(samples, np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).reshape(10, 8, 8))
    files = sorted((out / "samples").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    assert np.array_equal(np.asarray(Image.open(files[4])), samples[4])
    grid = np.asarray(Image.open(out / "grid.png"))
    zoom = 512 // (4 * 8)  # 10 samples: a 4x3 grid of 8x8, enlarged, 2 white pixels apart
    cell = 8 * zoom
    assert grid.shape == (3 * cell + 2 * 2, 4 * cell + 3 * 2)
    assert np.array_equal(grid[:cell:zoom, cell + 2 : 2 * cell + 2 : zoom], samples[1])
    assert (grid[:, cell : cell + 2] == 255).all()


def test_same_seed_same_samples_other_seed_other_samples(tmp_path, digits_ckpt):
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert (
            run_main(
                generate_job.main,
                [
                    "--checkpoint",
                    digits_ckpt,
                    "--output",
                    str(tmp_path / name),
                    "--count",
                    "5",
                    "--seed",
                    seed,
                ],
            )
            == 0
        )
        runs[name] = np.load(tmp_path / name / "samples.npy")
    assert np.array_equal(runs["a"], runs["b"]) and not np.array_equal(runs["a"], runs["c"])


def test_conv_model_draws_any_size(tmp_path, photos_ckpt):
    out = tmp_path / "gen"
    assert (
        run_main(
            generate_job.main,
            ["--checkpoint", photos_ckpt, "--output", str(out), "--count", "3", "--size", "20x28"],
        )
        == 0
    )
    assert np.load(out / "samples.npy").shape == (3, 20, 28, 3)


def test_conv_model_without_size_is_one_clear_error(tmp_path, photos_ckpt, capsys):
    assert run_main(generate_job.main, ["--checkpoint", photos_ckpt, "--output", str(tmp_path / "g")]) == 2
    assert "give --size HxW" in capsys.readouterr().err
