"""What users expect of the command lines: every option explained, config files as an
alternative to flags (saved resolved beside the output), one clear line when the cluster is
not what the user said."""

import importlib

import pytest
import yaml

from jobs import encode as encode_job
from jobs._cli import Parser, run_main

JOBS = [
    "encode",
    "decode",
    "train",
    "verify",
    "prepare_demo",
    "bench",
    "inspect",
    "generate",
    "features",
    "sweep",
    "import_diffusers",
]


class _Captured(Exception):
    pass


def parser_of(name, monkeypatch):
    """The job's own parser, taken as its main() is about to parse."""
    captured = {}

    def capture(self, args=None, namespace=None):
        captured["p"] = self
        raise _Captured

    monkeypatch.setattr(Parser, "parse_args", capture)
    with pytest.raises(_Captured):
        importlib.import_module(f"jobs.{name}").main([])
    return captured["p"]


@pytest.mark.parametrize("name", JOBS)
def test_every_option_is_explained(name, monkeypatch):
    p = parser_of(name, monkeypatch)
    options = [a for a in p._actions if a.option_strings and a.dest != "help"]
    assert options
    for a in options:
        assert a.help and len(a.help) > 10, (name, a.option_strings)


def _args(tmp_path, digits_dir, digits_ckpt):
    return {
        "input": digits_dir,
        "checkpoint": digits_ckpt,
        "output": str(tmp_path / "arch"),
        "calibration-rows": 256,
        "zstd-level": 5,
    }


@pytest.mark.usefixtures("local_ray")
@pytest.mark.timeout(300)
def test_config_file_instead_of_flags_and_saved_resolved(tmp_path, digits_dir, digits_ckpt, capsys):
    values = _args(tmp_path, digits_dir, digits_ckpt)
    toml = tmp_path / "job.toml"
    toml.write_text("\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in values.items()))
    # a flag on the command line wins over the file
    assert run_main(encode_job.main, ["--config", str(toml), "--layout", "channel"]) == 0
    resolved = yaml.safe_load((tmp_path / "arch" / "encode.config.yaml").read_text())
    assert resolved["zstd-level"] == 5 and resolved["layout"] == "channel"
    assert resolved["input"] == digits_dir and resolved["calibration-rows"] == 256
    assert resolved["max-loss-db"] == 0.1  # the default as used, not null
    import json

    job = json.loads((tmp_path / "arch" / "job.json").read_text())
    assert job["codec"]["level"] == 5 and job["codec"]["layout"] == "channel"
    capsys.readouterr()
    # the saved file runs the same job again: everything is already complete
    again = tmp_path / "again.yaml"
    again.write_text((tmp_path / "arch" / "encode.config.yaml").read_text())
    assert run_main(encode_job.main, ["--config", str(again)]) == 0
    assert "encoded 0 shards (4 already complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        ("zstd-levl: 5\n", "unknown option 'zstd-levl'"),
        ("layout: diagonal\n", "layout: 'diagonal' is not one of ['auto', 'channel', 'position']"),
        ("[not, a, mapping]\n", "must hold a mapping"),
        ("a: [\n", "does not parse"),
    ],
)
def test_bad_config_file_is_one_clear_line(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert (
        run_main(
            encode_job.main,
            ["--config", str(cfg), "--input", "x", "--checkpoint", "y", "--output", str(tmp_path / "o")],
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.usefixtures("local_ray")
@pytest.mark.timeout(120)
def test_asking_for_gpus_on_a_cpu_cluster_is_one_clear_line(tmp_path, digits_dir, digits_ckpt, capsys):
    assert (
        run_main(
            encode_job.main,
            [
                "--input",
                digits_dir,
                "--checkpoint",
                digits_ckpt,
                "--output",
                str(tmp_path / "a"),
                "--device",
                "cuda",
            ],
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--device cuda: the Ray cluster has no GPUs" in err and "\n" not in err


def test_worker_logs_name_the_shard(tmp_path, digits_ckpt, caplog):
    import logging

    import numpy as np

    from pipeline.codec.codec import CodecConfig
    from pipeline.codec.quantize import QuantizerConfig
    from pipeline.ledger.job import JobParams
    from pipeline.ledger.plan import plan_shards
    from pipeline.workers.encode import EncodeSpec, EncodeWorker

    data = tmp_path / "data"
    data.mkdir()
    good = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    np.save(data / "good.npy", good)
    bad = good.astype(np.float32) / 255  # floats in 0..1, as the model takes them
    bad[7, 2, 2] = np.nan
    np.save(data / "bad.npy", bad)
    worker = EncodeWorker(EncodeSpec(checkpoint=digits_ckpt, output=str(tmp_path / "arch")))
    shards = plan_shards(str(data))
    q, c = worker.calibrate(
        [s for s in shards if s.relpath == "good.npy"], 64, QuantizerConfig(), CodecConfig()
    )
    with caplog.at_level(logging.INFO, logger="pipeline"):
        results = {s.relpath: worker.process(s, JobParams(q, c, "job")) for s in shards}
    assert results["good.npy"].ok and not results["bad.npy"].ok
    assert 0 < results["good.npy"].model_seconds < results["good.npy"].seconds
    text = caplog.text
    assert "shard good.vz.parquet: 20 rows" in text
    assert "shard bad.vz.parquet failed: " in text and "bad.npy row 7: sample holds NaN" in text


@pytest.mark.parametrize(
    "err, line",
    [
        (
            OSError(28, "No space left on device", "/out/failures.json"),
            "error: /out/failures.json: No space left on device",
        ),
        (PermissionError(13, "Permission denied", "/ro/job.json"), "error: /ro/job.json: Permission denied"),
    ],
)
def test_the_drivers_own_io_errors_are_one_line(capsys, err, line):
    def main(argv):
        raise err

    assert run_main(main, []) == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_negative_value_needs_no_equals_sign():
    from jobs.train import build_parser

    args = build_parser().parse_args(["--input", "x", "--output", "y", "--value-range", "-1500,2300"])
    assert args.value_range == "-1500,2300"
    args = build_parser().parse_args(["--input", "x", "--output", "y", "--value-range=-1500,2300"])
    assert args.value_range == "-1500,2300"


def test_help_shows_no_default_of_none(capsys):
    with pytest.raises(SystemExit):
        encode_job.main(["--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "(default 0.1:" in out
    assert "420 bytes" not in out and "13.8 bytes" not in out  # figures the README no longer quotes


def test_a_checkpoint_that_does_not_fit_the_input_is_refused_before_ray(
    tmp_path, digits_ckpt, photos, capsys, monkeypatch
):
    import pipeline.run.runner as runner

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runner, "connect", no_ray)
    rc = run_main(
        encode_job.main,
        ["--input", str(photos / "heldout"), "--checkpoint", digits_ckpt, "--output", str(tmp_path / "a")],
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the input does not fit the checkpoint" in err[0]
    assert "sample has 3072 values, the model takes 64 (shape (32, 32, 3))" in err[0]


def test_a_channel_mismatch_names_the_shape_the_model_takes():
    import numpy as np

    from pipeline.core.errors import InputError
    from pipeline.data.samples import to_model
    from pipeline.model.nets import ConvConfig

    with pytest.raises(InputError, match=r"does not fit a 3-channel model \(expected \(H, W, 3\)\)$"):
        to_model(np.zeros((16, 16), np.uint8), ConvConfig(in_channels=3), "g.png", 0)
    with pytest.raises(
        InputError, match=r"does not fit a 1-channel model \(expected \(H, W\) or \(H, W, 1\)\)$"
    ):
        to_model(np.zeros((16, 16, 3), np.uint8), ConvConfig(in_channels=1), "c.png", 0)


def test_the_cache_preset_sets_a_latent_bound_and_rans_unless_told_otherwise():
    from jobs.encode import apply_preset, build_parser

    def resolved(*extra):
        args = build_parser().parse_args(["--input", "x", "--checkpoint", "c", "--output", "y", *extra])
        apply_preset(args)
        return args.max_latent_error, args.max_loss_db, args.quantizer, args.codec

    assert resolved() == (None, None, "loss", "zstd")  # archive: the loss bound, filled in later
    assert resolved("--preset", "cache") == (0.002, None, "loss", "rans")
    assert resolved("--preset", "cache", "--max-latent-error", "0.01") == (0.01, None, "loss", "rans")
    assert resolved("--preset", "cache", "--codec", "zstd") == (0.002, None, "loss", "zstd")
    assert resolved("--preset", "cache", "--max-loss-db", "0.2") == (None, 0.2, "loss", "rans")
    assert resolved("--preset", "cache", "--quantizer", "posterior") == (None, None, "posterior", "rans")
