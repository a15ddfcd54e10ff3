"""Ranges that fit the data, and a collapsed model said in one line (a new user's 16-bit MRI
slice holding 0..215 trained to garbage on 0..65535 and encode died in a traceback)."""

import json

import numpy as np
import pytest

from jobs import train as train_job
from jobs._cli import run_main
from tests.helpers import encode


@pytest.fixture(scope="module")
def camera():
    from skimage import data

    return data.camera()  # 512x512 uint8, a real photograph


def _train(inp, out, *extra):
    argv = ["--input", str(inp), "--output", str(out), "--max-steps", "20", *extra]
    return run_main(train_job.main, argv)


def _recorded_range(ckpt) -> list[float]:
    return json.loads((ckpt / "config.json").read_text())["value_range"]


def test_a_16_bit_scan_that_fills_a_sliver_of_its_type_gets_its_own_extent(camera, tmp_path, caplog):
    import logging

    scan = (camera.astype(np.uint32) * 215 // 255).astype(np.uint16)  # 0..215 in a uint16
    tiles = scan.reshape(32, 16, 32, 16).swapaxes(1, 2).reshape(-1, 16, 16)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "mri.npy", tiles)
    with caplog.at_level(logging.INFO, logger="jobs.train"):
        assert _train(tmp_path / "in", tmp_path / "ckpt", "--model", "mlp") == 0
    assert _recorded_range(tmp_path / "ckpt") == [0, 220]
    assert (
        "value range 0..220: the data's extent 0..215, rounded outward (uint16 holds 0..65535" in caplog.text
    )


def test_crops_take_their_range_from_the_whole_images(camera, tmp_path, capsys):
    metres = camera.astype(np.float32) / 255.0 * 3642.0 - 1437.0  # -1437..2205, like a bathymetry
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "topo.npy", metres[None])
    assert _train(tmp_path / "in", tmp_path / "ckpt", "--crop", "32", "--crops-per-image", "64") == 0
    assert _recorded_range(tmp_path / "ckpt") == pytest.approx([float(metres.min()), float(metres.max())])
    assert "the validation crops overlap the training crops" in capsys.readouterr().out  # a caveat


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_a_collapsed_model_is_a_one_line_failure_in_train_and_encode(tmp_path, digits_dir, capsys):
    ckpt = tmp_path / "ckpt"
    assert _train(digits_dir, ckpt, "--beta", "10000", "--warmup-steps", "0", "--max-steps", "100") == 1
    err = capsys.readouterr().err
    assert "training failed: 0 of 16 latent channels carry information" in err
    assert encode(digits_dir, str(ckpt), tmp_path / "arch") == 2
    err = capsys.readouterr().err
    assert "error: the checkpoint's latents carry no information: 0 of 16 channels are active" in err
    assert "Traceback" not in err and "ValueError" not in err
