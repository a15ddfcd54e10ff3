import json
import re

import numpy as np
import pytest

from jobs import prepare_demo, train
from jobs._cli import run_main
from pipeline.model.checkpoint import load_checkpoint


def test_train_mlp_on_digits_writes_checkpoint_report_and_png(tmp_path, digits_dir):
    out = tmp_path / "ckpt"
    rc = run_main(train.main, ["--input", digits_dir, "--output", str(out), "--epochs", "3", "--latent", "6"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    ckpt = load_checkpoint(str(out))
    assert report["fingerprint"] == ckpt.fingerprint
    assert ckpt.config.kind == "mlp" and ckpt.config.input_dim == 64
    assert report["train_rows"] + report["val_rows"] == 1797
    v = report["validation"]
    assert len(v["kl_per_channel_nats"]) == 6 and 0 <= v["active_channels"] <= 6
    assert np.isfinite(v["elbo_nats"]) and v["psnr_db"] > 5
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "train_args.json").read_text())["latent"] == 6


def test_train_conv_on_photo_crops_with_held_out_set(tmp_path):
    demo = tmp_path / "demo"
    assert run_main(prepare_demo.main, ["--output", str(demo), "--crop", "32"]) == 0
    out = tmp_path / "conv"
    rc = run_main(
        train.main,
        [
            "--input",
            str(demo / "photos" / "train"),
            "--max-rows",
            "256",
            "--eval-input",
            str(demo / "photos" / "heldout"),
            "--output",
            str(out),
            "--epochs",
            "1",
            "--base-channels",
            "8",
            "--latent",
            "4",
        ],
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["kind"] == "conv" and report["model"]["in_channels"] == 3
    assert report["held_out"]["rows"] > 0 and np.isfinite(report["held_out"]["psnr_db"])
    assert report["train_rows"] + report["val_rows"] == 256


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "/no/such/place", "--output", "x"], "/no/such/place: no such file"),
        (["--input", "{digits}", "--output", "x", "--val-fraction", "1.5"], "val_fraction"),
        (["--input", "{digits}", "--output", "x", "--latent", "-1"], "must be positive"),
        (["--input", "{digits}", "--output", "x", "--device", "cuda:0"], "no CUDA GPU"),
    ],
)
def test_bad_arguments_give_one_clear_line(capsys, tmp_path, digits_dir, args, message):
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = [str(tmp_path / "x") if a == "x" else a.replace("{digits}", digits_dir) for a in args]
    rc = run_main(train.main, argv)
    assert not (tmp_path / "x").exists()  # a refused run writes nothing
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_unreadable_data_gives_one_clear_line(tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"this is not numpy")
    rc = run_main(train.main, ["--input", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.npy: not a readable .npy array" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--output", "never-written"])
    assert exc.value.code == 2
    assert "--input" in capsys.readouterr().err


def test_max_steps_stops_training_there_and_the_bar_total_is_fixed(tmp_path, digits_dir, capsys):
    out = tmp_path / "ckpt"
    assert (
        train.main(["--input", digits_dir, "--output", str(out), "--epochs", "50", "--max-steps", "7"]) == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 7 and report["epochs"] == 1
    err = capsys.readouterr().err
    totals = {m.group(1) for m in re.finditer(r"train:.*?\| *\d+/(\d+) \[", err)}
    assert totals == {"7"}  # 7/7 from the first update on, never 15/47, 16/48


def test_the_default_thread_count_leaves_the_load_its_cpus_and_is_printed(tmp_path, digits_dir, caplog):
    import logging

    import torch

    from jobs.train import free_cpus

    assert [free_cpus(2, load) for load in (0.0, 0.4, 0.6, 1.7, 5.0)] == [2, 2, 1, 1, 1]
    assert free_cpus(16, 3.2) == 13 and free_cpus(1, 0.0) == 1
    before = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="jobs.train"):
        args = ["--input", digits_dir, "--output", str(tmp_path / "d"), "--max-steps", "2", "--threads", "2"]
        assert train.main(args) == 0
    assert "(device cpu, 2 torch threads)" in caplog.text and torch.get_num_threads() == 2
    torch.set_num_threads(before)


def test_the_report_speaks_bits_per_value():
    from pipeline.train.report import per_value_bits

    assert per_value_bits(-15000.0, 64 * 64 * 3) == pytest.approx(-1.761, abs=1e-3)
    assert per_value_bits(36.1, 64) == pytest.approx(0.814, abs=1e-3)
