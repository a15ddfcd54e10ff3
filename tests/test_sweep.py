"""jobs.sweep: a few latent sizes trained and measured at several steps, with the curves."""

import json

import pytest

from jobs import sweep
from jobs._cli import run_main
from pipeline.model.checkpoint import load_checkpoint


@pytest.mark.timeout(300)
def test_sweep_measures_each_latent_size_and_step(tmp_path, digits_dir, capsys):
    out = tmp_path / "sweep"
    assert (
        run_main(
            sweep.main,
            [
                "--input",
                digits_dir,
                "--output",
                str(out),
                "--latents",
                "2,6",
                "--step-sigmas",
                "0.5,4",
                "--epochs",
                "15",
            ],
        )
        == 0
    )
    report = json.loads((out / "sweep.json").read_text())
    rows = report["rows"]
    assert report["measured_on"] == "validation split"
    assert [(r["latent"], r["step_sigmas"]) for r in rows] == [(2, 0.5), (2, 4.0), (6, 0.5), (6, 4.0)]
    for latent in (2, 6):
        fine, coarse = (r for r in rows if r["latent"] == latent)
        assert fine["bytes_per_sample"] > coarse["bytes_per_sample"] > 0
        loss = {k: r["psnr_unquantized"] - r["psnr"] for k, r in (("fine", fine), ("coarse", coarse))}
        assert loss["fine"] <= loss["coarse"] + 0.05  # a finer step loses no more
        assert load_checkpoint(str(out / f"latent-{latent}")).config.latent_dim == latent
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "latent  step  bytes/sample" in text and text.count("\n") >= 6


@pytest.mark.timeout(300)
def test_a_lambda_sweep_trains_and_measures_an_rd_model_per_lambda(tmp_path, photos, capsys):
    out = tmp_path / "sweep"
    argv = ["--input", str(photos / "train"), "--eval-input", str(photos / "heldout"), "--output", str(out)]
    argv += ["--objective", "rd", "--lmbdas", "0.001,0.05", "--max-rows", "512", "--epochs", "6"]
    argv += [
        "--latent",
        "12",
        "--hidden-channels",
        "16",
        "--batch-size",
        "32",
        "--threads",
        "1",
    ]  # as in the suite
    assert run_main(sweep.main, argv) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["lmbda"] for r in rows] == [0.001, 0.05]
    low, high = rows
    assert high["bytes_per_sample"] > low["bytes_per_sample"] > 0  # more lambda: more bytes...
    assert high["psnr"] > low["psnr"]  # ...and less error
    for r in rows:
        assert load_checkpoint(str(out / r["checkpoint"])).config.kind == "rd"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "lmbda-0.05" in capsys.readouterr().out
    from jobs.encode import choose_from_sweep
    from pipeline.core.errors import ConfigError

    mid = (low["psnr"] + high["psnr"]) / 2  # rate control across the sweep: the cheapest that reaches it
    assert choose_from_sweep(str(out), mid, None)["lmbda"] == 0.05
    assert choose_from_sweep(str(out), low["psnr"] - 1, None)["lmbda"] == 0.001
    assert choose_from_sweep(str(out), None, high["bytes_per_sample"] - 0.01)["lmbda"] == 0.001
    assert choose_from_sweep(str(out), None, high["bytes_per_sample"] + 1)["lmbda"] == 0.05
    with pytest.raises(ConfigError, match="no model of the sweep reaches"):
        choose_from_sweep(str(out), high["psnr"] + 5, None)
    with pytest.raises(ConfigError, match="one target"):
        choose_from_sweep(str(out), mid, 100.0)
