"""--max-loss-db: steps chosen through the decoder, checked on rows they were not fitted on."""

import json
import re

import numpy as np
import pytest
import torch

from jobs import encode as encode_job
from jobs import verify as verify_job
from jobs._cli import run_main
from pipeline.codec.format import archive_files, read_meta
from pipeline.codec.quantize import QuantizerConfig, QuantizerParams
from pipeline.codec.ratecontrol import Rows, calibrate_loss, expected_loss_db, loss_db
from pipeline.core.errors import ConfigError
from tests.helpers import decode, encode


def _linear(gains):
    """A decoder y = z * sqrt(gain) per channel, and noisy inputs: its error is known."""
    scale = np.sqrt(np.asarray(gains))[None, :, None]
    return lambda z: z * scale


def test_equal_slope_gives_each_channel_a_step_by_its_gain_and_meets_the_bound():
    rng = np.random.default_rng(0)
    gains = [1.0, 4.0, 16.0, 0.25]
    z = rng.normal(0, 1, (400, 4, 16))
    dec = _linear(gains)
    x = dec(z) + rng.normal(0, 0.05, z.shape)  # the model's own error: 0.05 rms
    rows = [Rows(x, z, dec)]
    params = calibrate_loss(rows, 0.2, np.ones(4, bool))
    steps = np.asarray(params.step)
    # equal slope: step * sqrt(gain) is the same for every channel (each gain is measured on a
    # quarter of the fit rows, one decode for all four: within a few percent)
    assert steps * np.sqrt(gains) == pytest.approx(np.full(4, steps[0]), rel=0.05)
    assert params.mode == "loss" and params.target_loss_db == 0.2
    assert params.measured_loss_db <= 0.2 and params.bits_per_value > 0
    y0 = [dec(z)]
    assert expected_loss_db(rows, params, y0) <= 0.2 + 0.02  # all rows, fitted and checked
    assert 0.1 < loss_db(rows, params, y0)  # and not needlessly fine


def test_loss_parameters_travel_through_json_and_are_checked():
    p = QuantizerParams("loss", (0.0,), (0.5,), (9,), (True,), 0.1, 0.08, 2.5)
    again = QuantizerParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    assert "measured_loss_db" not in QuantizerParams("affine", (0.0,), (0.5,), (9,), (True,)).to_dict()
    assert QuantizerConfig() == QuantizerConfig(mode="loss", max_loss_db=0.1)  # the default
    with pytest.raises(ConfigError, match=r"must be in \(0, 20\]"):
        QuantizerConfig(mode="loss", max_loss_db=0)


@pytest.mark.usefixtures("local_ray")
@pytest.mark.timeout(300)
def test_an_archive_at_a_loss_bound_records_what_it_measured(
    tmp_path, digits, digits_dir, digits_ckpt, trained_mlp, capsys
):
    arch = tmp_path / "arch"
    assert encode(digits_dir, digits_ckpt, arch, "--max-loss-db", "0.3") == 0
    out = capsys.readouterr().out
    job = json.loads((arch / "job.json").read_text())["quantizer"]
    assert job["mode"] == "loss" and job["target_loss_db"] == 0.3 and job["measured_loss_db"] <= 0.3
    se = job["measured_loss_se_db"]
    assert (
        0 < se < 0.3
        and f"loss {job['measured_loss_db']:.3f} dB (bound 0.3 dB; standard error {se:.3f} dB)" in out
    )
    for f in archive_files(str(arch)):
        assert read_meta(f).quantizer.to_dict() == job
    assert decode(arch, digits_ckpt, tmp_path / "rec") == 0
    # afterwards, over every row: verify decodes the unquantized latents and reports the loss
    argv = ["--original", str(digits_dir), "--restored", str(tmp_path / "rec"), "--archive", str(arch)]
    assert run_main(verify_job.main, [*argv, "--checkpoint", digits_ckpt]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("quantizing cost"))
    loss = float(re.search(r"cost (-?[\d.]+) dB", line).group(1))
    unquantized = float(re.search(r"unquantized latents ([\d.e+]+)", line).group(1))
    x = digits[0].reshape(len(digits[0]), -1)
    with torch.inference_mode():
        z = trained_mlp[0].encode(torch.from_numpy((x / 255.0).astype(np.float32))).mean
        y0 = np.rint(trained_mlp[0].decode(z).clamp(0, 1).numpy() * 255)
    assert unquantized == pytest.approx(float(np.sum((x - y0) ** 2)), rel=1e-5)
    assert abs(loss - job["measured_loss_db"]) < 0.1  # 1,797 rows against 256 check rows


def test_a_loss_bound_with_another_quantizer_is_one_clear_line(tmp_path, digits_dir, digits_ckpt, capsys):
    argv = ["--input", str(digits_dir), "--checkpoint", digits_ckpt, "--output", str(tmp_path / "a")]
    assert run_main(encode_job.main, [*argv, "--quantizer", "posterior", "--max-loss-db", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-loss-db bounds the loss quantizer; --quantizer posterior has no such bound"]
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("bound", [0.05, 0.01, 0.002])
def test_latent_steps_keep_each_channels_error_within_the_bound(bound):
    from pipeline.codec.quantize import (
        QuantizerConfig,
        calibrate,
        fit_latent_steps,
        latent_errors,
        stats_from_latents,
    )

    rng = np.random.default_rng(0)
    scales = np.array([0.01, 1.0, 30.0, 3.0])[None, :, None]
    z = (rng.standard_normal((400, 4, 16)) ** 3 * scales).astype(np.float32)  # heavy tails
    stats = stats_from_latents(z, np.zeros_like(z))
    params = calibrate(stats, QuantizerConfig(mode="latent", max_latent_error=bound))
    fitted = fit_latent_steps(z[::2], z[1::2], params, stats.std, bound)
    err = latent_errors(z, fitted, stats.std)
    assert err.max() <= 1.05 * bound and err.min() >= 0.5 * bound  # within, and not far within
    assert fitted.measured_latent_error <= 1.05 * bound and fitted.target_latent_error == bound
