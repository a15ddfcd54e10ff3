"""A learned codec trained for rate and distortion: its entropy models, its coder, its training."""

import json
import math

import numpy as np
import pytest
import torch

from jobs import train as train_job
from jobs._cli import run_main
from pipeline.codec.ctxcoder import RowError
from pipeline.codec.learned import (
    LearnedTables,
    decode_factorized,
    decode_gaussian,
    encode_factorized,
    encode_gaussian,
)
from pipeline.core.errors import ConfigError
from pipeline.data.rd_rows import RDCoder
from pipeline.model.checkpoint import load_checkpoint
from pipeline.model.entropy import FactorizedDensity, bits, gaussian_likelihood, scale_indexes, scale_ladder
from pipeline.model.nets import RDConfig, build_model
from pipeline.model.rd_loss import rd_terms
from pipeline.train.training import TrainSettings, evaluate_rd, train


def test_the_factorized_density_is_a_distribution_over_the_integers():
    torch.manual_seed(0)
    d = FactorizedDensity(3)
    with torch.no_grad():
        for p in d.biases:
            p.add_(torch.randn_like(p))
    values = torch.arange(-300, 301, dtype=torch.float32)
    p = d.likelihood(values.expand(1, 3, -1).contiguous())
    assert torch.allclose(p.sum(-1), torch.ones(1, 3), atol=1e-4)
    offsets, probs = d.tables()
    assert probs.shape[0] == 3 and np.allclose(probs.sum(1), 1.0, atol=1e-6)
    # the table is the density at those integers
    at = torch.from_numpy(offsets[:, None] + np.arange(probs.shape[1])[None, :]).float()
    direct = d.likelihood(at[None]).squeeze(0).detach().numpy()
    within = probs > 0
    assert np.allclose(direct[within], probs[within], atol=1e-5)


def test_the_gaussian_conditional_sums_to_one_and_the_ladder_rounds_up():
    sigma = torch.tensor([0.3, 1.0, 7.5])
    values = torch.arange(-200, 201, dtype=torch.float32)[:, None]
    assert torch.allclose(gaussian_likelihood(values, sigma).sum(0), torch.ones(3), atol=1e-5)
    ladder = scale_ladder()
    idx = scale_indexes(sigma).numpy()
    assert (ladder[idx] >= sigma.numpy()).all() and (ladder[np.maximum(idx - 1, 0)] < sigma.numpy()).all()


def _tables(channels: int = 4, support: int = 21) -> LearnedTables:
    probs = np.exp(-0.5 * ((np.arange(support) - support // 2) / 3.0) ** 2)[None].repeat(channels, 0)
    return LearnedTables(offsets=np.full(channels, -(support // 2)), probs=probs, ladder=scale_ladder())


def test_the_coder_round_trips_values_inside_and_far_outside_the_tables():
    rng = np.random.default_rng(0)
    t = _tables()
    v = np.round(rng.normal(0, 3, (4, 50))).astype(np.int64)
    v[0, 3], v[2, 7], v[3, 0] = 1000, -70000, 2**31 - 1  # escapes, one at the widest value
    rows = np.stack([v, -v, np.zeros_like(v)])
    assert np.array_equal(decode_factorized(encode_factorized(rows, t), t, 50), rows)
    idx = rng.integers(0, len(t.ladder), (8, 6, 4, 4))
    g = np.round(rng.normal(0, 1, idx.shape) * t.ladder[idx]).astype(np.int64)
    g[0, 0, 0, 0], g[1, 2, 3, 1], g[7, 5, 3, 3] = 5000, -255, 40
    streams = encode_gaussian(g, idx, t)
    assert np.array_equal(decode_gaussian(streams, idx, t), g)
    assert np.array_equal(decode_gaussian(streams[3:4], idx[3:4], t), g[3:4])  # a row decodes alone
    with pytest.raises(ValueError, match="beyond 2\\^31"):
        encode_factorized(np.full((1, 4, 1), 2**33), t)


def test_a_cut_or_corrupt_stream_is_refused_naming_its_row():
    from pipeline.codec.ctxcoder import RowError

    rng = np.random.default_rng(1)
    t = _tables()
    v = np.round(rng.normal(0, 3, (3, 4, 40))).astype(np.int64)
    streams = encode_factorized(v, t)
    for bad in (streams[1][:-2], streams[1] + b"\x00\x00", streams[1][:2]):
        with pytest.raises(RowError) as err:
            decode_factorized([streams[0], bad, streams[2]], t, 40)
        assert err.value.row == 1


def test_rows_of_unequal_lengths_decode_two_at_a_time_and_a_bad_one_is_named():
    """Rows are decoded in pairs, side by side for their common length: rows of different
    lengths (the longer one's rest alone), an odd row out, and a bad row at either place in a
    pair or alone at the end."""
    t = _tables()
    g = t.given
    rng = np.random.default_rng(2)
    lengths = [7, 30, 0, 12, 12, 1, 45]
    row_ends = np.cumsum(lengths)
    values = np.round(rng.normal(0, 3, row_ends[-1])).astype(np.int64)
    values[5], values[40] = 9000, -123456  # escapes in the first and the fourth row
    tabs = rng.integers(0, len(g.sizes), row_ends[-1])
    streams = g.encode(values, tabs, row_ends)
    assert np.array_equal(g.decode(streams, tabs, row_ends), values)
    for wrong in (len(g.sizes), -1):  # a table past the last, or before the first
        tabs_bad = tabs.copy()
        tabs_bad[50] = wrong
        with pytest.raises(ValueError, match="table index outside"):
            g.decode(streams, tabs_bad, row_ends)
    assert np.array_equal(g.decode(streams, (tabs - 1).astype(np.int16), row_ends, base=1), values)
    for row in (0, 1, 6):
        bad = list(streams)
        bad[row] = bad[row][:-2] if len(bad[row]) > 4 else bad[row] + b"\x01\x00"
        with pytest.raises(RowError) as err:
            g.decode(bad, tabs, row_ends)
        assert err.value.row == row


def test_a_row_decodes_in_two_parts_from_one_stream_and_a_bad_row_is_named_in_either():
    """The head of every row first (its side information), then the rest from where each row
    stopped, under tables the head may choose: the same values as one decode, a bad row named
    whether the damage shows in the head or only at the end, a pair's retry not misled by it."""
    t = _tables()
    g = t.given
    rng = np.random.default_rng(5)
    head, lengths = 6, [20, 9, 31, 6, 17]
    row_ends = np.cumsum(lengths)
    values = np.round(rng.normal(0, 4, row_ends[-1])).astype(np.int64)
    values[3] = 70000  # an escape in the first row's head
    tabs = rng.integers(0, len(g.sizes), row_ends[-1])
    streams = g.encode(values, tabs, row_ends)
    starts = row_ends - lengths
    first = np.concatenate([np.arange(s, s + head) for s in starts])
    rest = np.concatenate([np.arange(s + head, e) for s, e in zip(starts, row_ends, strict=True)])
    got, stop = g.decode_head(streams, tabs[first], np.arange(1, 6) * head)
    assert np.array_equal(got, values[first])
    tail = g.decode(streams, tabs[rest], np.cumsum(np.array(lengths) - head), after=stop)
    assert np.array_equal(tail, values[rest])
    with pytest.raises(RowError):  # the whole row is not the rest of it
        g.decode(streams, tabs, row_ends, after=stop)
    with pytest.raises(ValueError, match="stopped"):
        g.decode(streams[:4], tabs[rest], np.cumsum(np.array(lengths) - head)[:4], after=stop)
    for row, cut in ((2, lambda b: b[:6]), (3, lambda b: b[:-2]), (0, lambda b: b[:-2] + b"\x7f\x00")):
        bad = list(streams)
        bad[row] = cut(bad[row])
        with pytest.raises(RowError) as err:
            _, stop_bad = g.decode_head(bad, tabs[first], np.arange(1, 6) * head)
            g.decode(bad, tabs[rest], np.cumsum(np.array(lengths) - head), after=stop_bad)
        assert err.value.row == row


def test_likely_values_cost_few_bits_and_unlikely_ones_many():
    t = _tables()
    zeros = np.zeros((1, 4, 64), dtype=np.int64)
    far = np.full((1, 4, 64), 9, dtype=np.int64)
    assert len(encode_factorized(zeros, t)[0]) * 3 < len(encode_factorized(far, t)[0])


def _model(prior: str, gain: float = 40.0, factor: int = 16, channels: int = 3):
    """Random weights scaled so the rounded latents are not all zero."""
    torch.manual_seed(0)
    config = RDConfig(
        in_channels=channels, latent_channels=8, hidden_channels=16, prior=prior, downsample_factor=factor
    )
    model = build_model(config).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(gain)
    return model


@pytest.mark.parametrize(
    "prior, factor, shape",
    [
        ("hyperprior", 16, (3, 70, 40)),
        ("factorized", 16, (3, 70, 40)),
        ("hyperprior", 4, (1, 8, 8)),  # the digits' size: y 4x4 (padded to 16x16 for z), z 1x1
        ("factorized", 4, (1, 8, 8)),  # y 2x2
        ("hyperprior", 8, (1, 20, 12)),
    ],
)
def test_the_row_coder_gives_back_the_rounded_latents_exactly(prior, factor, shape):
    model = _model(prior, factor=factor, channels=shape[0])
    coder = RDCoder(model)
    x = torch.rand(5, *shape)
    rows = coder.encode(x)
    with torch.no_grad():
        y = torch.round(model.encode(x).mean).numpy().astype(np.int64)
    assert np.abs(y).max() > 2  # the check below is not only of zeros
    assert np.array_equal(coder.latents(rows), y)
    assert np.array_equal(coder.latents(rows[2:3]), y[2:3])  # a row decodes alone
    with torch.no_grad():
        direct = model.decode(torch.from_numpy(y).float(), shape[1:])
    assert y.shape[1:] == model.latent_shape(shape[1:])
    assert torch.equal(coder.decode(rows, shape[1:]), direct)


def test_rd_training_lowers_the_loss_and_a_larger_lambda_spends_more_bits(photos):
    """64 steps a lambda. That the larger lambda also buys less error, on coded held-out
    crops, is tests/test_sweep.py's (a sweep's two models)."""
    from pipeline.train.dataset import read_samples, stack_for_model

    config = RDConfig(latent_channels=16, hidden_channels=16, prior="hyperprior")
    data, _ = stack_for_model(read_samples(str(photos / "train"), max_rows=256), config)
    x = torch.from_numpy(data)

    def objective(model, lmbda):  # the rd loss on the rows, over a few fixed noise draws
        torch.manual_seed(1)
        with torch.no_grad():
            return float(np.mean([rd_terms(model, x).loss(lmbda).item() for _ in range(4)]))

    models = {}
    for lmbda in (0.001, 0.05):
        torch.manual_seed(0)
        model = build_model(config)
        before = objective(model, lmbda)
        settings = TrainSettings(epochs=8, batch_size=32, objective="rd", lmbda=lmbda, val_fraction=0.0)
        r = train(model, data, settings, torch.device("cpu"))
        assert objective(model, lmbda) < before / 10 and r.evaluation.bpp > 0
        models[lmbda] = model
    assert evaluate_rd(models[0.05], x).bpp > 2 * evaluate_rd(models[0.001], x).bpp


def test_each_epochs_figures_take_a_few_rows_and_the_result_all_of_them_the_weights_unchanged():
    """The per-epoch evaluation on ``epoch_eval_rows`` rows is a cheaper look, not another
    training: the weights and the final figures are those of a run that evaluates every row."""
    from pipeline.train.training import split

    config = RDConfig(latent_channels=8, hidden_channels=16, prior="hyperprior")
    data = np.random.default_rng(0).random((48, 3, 32, 32), dtype=np.float32)
    runs = {}
    for rows in (16, None):
        torch.manual_seed(0)
        model = build_model(config)
        settings = TrainSettings(
            epochs=2, batch_size=16, objective="rd", lmbda=0.01, val_fraction=0.0, epoch_eval_rows=rows
        )
        runs[rows] = model, train(model, data, settings, torch.device("cpu"))
    (capped, r), (full, r_all) = runs[16], runs[None]
    weights = zip(capped.state_dict().values(), full.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    val = torch.from_numpy(data[split(48, 0.0, 0)[0]])
    assert r.history[-1]["val_bpp"] == evaluate_rd(capped, val[:16]).bpp
    assert r.history[-1]["val_bpp"] != r_all.history[-1]["val_bpp"]  # another look, on fewer rows
    assert r.evaluation == r_all.evaluation == evaluate_rd(capped, val)
    with pytest.raises(ConfigError, match="epoch_eval_rows"):
        TrainSettings(epoch_eval_rows=0)


def test_train_job_writes_an_rd_checkpoint(tmp_path, photos, capsys):
    out = tmp_path / "rd"
    argv = ["--input", str(photos / "train"), "--output", str(out), "--objective", "rd", "--max-rows", "128"]
    assert run_main(train_job.main, [*argv, "--epochs", "2", "--latent", "8", "--hidden-channels", "8"]) == 0
    assert "bits/pixel" in capsys.readouterr().out
    ckpt = load_checkpoint(str(out))
    assert ckpt.config.kind == "rd" and ckpt.config.prior == "hyperprior"
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["bpp"] > 0 and len(report["validation"]["bits_per_channel"]) == 8
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_main(train_job.main, [*argv, "--model", "conv"]) == 2  # a conv VAE has no rate term
    assert "--objective rd needs --model rd" in capsys.readouterr().err


def test_train_job_fits_an_rd_codec_to_the_digits_at_a_factor_of_4(tmp_path, digits_dir, capsys):
    out = tmp_path / "rd-digits"
    argv = ["--input", digits_dir, "--output", str(out), "--objective", "rd", "--max-steps", "3"]
    small = ["--downsample-factor", "4", "--latent", "8", "--hidden-channels", "8"]
    assert run_main(train_job.main, [*argv, *small]) == 0
    ckpt = load_checkpoint(str(out))
    assert (ckpt.config.downsample_factor, ckpt.config.in_channels) == (4, 1)
    assert ckpt.model.latent_shape((8, 8)) == (8, 4, 4)  # padded to 16x16 so z is whole: 1x1
    capsys.readouterr()
    # a conv VAE does not downsample by 16
    conv = ["--input", digits_dir, "--output", str(tmp_path / "c"), "--model", "conv"]
    conv += ["--downsample-factor", "16"]
    assert run_main(train_job.main, conv) == 2
    assert "downsample_factor must be 4 or 8" in capsys.readouterr().err


def test_an_rd_model_refuses_a_factor_it_has_no_stages_for():
    with pytest.raises(ConfigError, match=r"downsample_factor must be one of \(4, 8, 16\), got 2"):
        RDConfig(downsample_factor=2)


def test_the_gaussian_conditional_keeps_far_tails_and_their_gradient():
    # a latent 10 sigmas out (its box's near end 5.5 out): (1 + erf) / 2 has no float32 step
    # between 1 - 6e-8 and 1 there, so it gave 0 or 3e-8 for a likelihood of 2.5e-8
    sigma = torch.tensor([0.11, 0.11, 1.0], requires_grad=True)
    y = torch.tensor([1.1, 1.0, 0.0])
    p = gaussian_likelihood(y, sigma)
    r = math.sqrt(2)
    exact = [
        0.5 * (math.erfc((abs(v) - 0.5) / (s * r)) - math.erfc((abs(v) + 0.5) / (s * r)))
        for v, s in zip(y.tolist(), sigma.tolist(), strict=True)
    ]
    assert p[0] > 0 and np.allclose(p.detach().numpy(), exact, rtol=1e-3, atol=0)
    bits(p[None]).sum().backward()  # training's path: the bits, floored at 1e-9
    assert sigma.grad is not None and torch.isfinite(sigma.grad).all()
    assert sigma.grad[0] < -100  # the bits fall fast as that sigma widens


@pytest.mark.parametrize("inverse", [False, True])
def test_squared_gdn_learns_how_channels_mask_each_other_where_abs_cannot(inverse):
    from pipeline.model.nets.rd import GDN

    x = torch.randn(4, 3, 5, 5)
    grads = {}
    for param in ("squared", "abs"):
        gdn = GDN(3, inverse, param)
        beta, gamma = gdn._positive()
        assert torch.allclose(beta, torch.ones(3), atol=1e-6)  # both start at the same transform
        assert torch.allclose(gamma, 0.1 * torch.eye(3), atol=1e-6)
        gdn(x).pow(2).sum().backward()
        assert gdn.gamma.grad is not None
        grads[param] = gdn.gamma.grad[~torch.eye(3, dtype=torch.bool)]
    assert (grads["squared"] != 0).all()  # every off-diagonal term moves
    assert (grads["abs"] == 0).all()  # abs at zero: the first models' terms never did


def test_an_rd_config_written_before_gdn_and_density_filters_builds_the_first_models():
    from pipeline.model.nets.config import config_from_dict, config_to_dict

    new = RDConfig(latent_channels=8, hidden_channels=16, gdn="squared", density_filters=(3, 3, 3, 3))
    assert config_from_dict(json.loads(json.dumps(config_to_dict(new)))) == new
    old = config_to_dict(new)
    del old["gdn"], old["density_filters"]
    legacy = config_from_dict(old)
    assert (legacy.gdn, legacy.density_filters) == ("abs", (3, 3, 3))
    model = build_model(legacy)
    assert len(model.prior.matrices) == 4 and model.g_a[1].param == "abs"
    assert len(build_model(new).prior.matrices) == 5 and build_model(new).g_a[1].param == "squared"
    with pytest.raises(ConfigError, match="gdn must be one of"):
        RDConfig(gdn="relu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="density_filters must be"):
        RDConfig(density_filters=(3, 0))


def test_train_job_builds_compressais_parameterization_when_asked(tmp_path, digits_dir):
    out = tmp_path / "rd"
    args = ["--input", digits_dir, "--output", str(out), "--objective", "rd", "--prior", "factorized"]
    args += ["--downsample-factor", "8", "--latent", "8", "--hidden-channels", "8", "--max-steps", "3"]
    args += ["--gdn", "squared", "--density-filters", "3,3,3,3"]
    assert run_main(train_job.main, args) == 0
    config = load_checkpoint(str(out)).config
    assert (config.gdn, config.density_filters) == ("squared", (3, 3, 3, 3))


def test_the_side_information_is_of_the_latents_before_rounding_in_the_archive_and_the_row_coder():
    """h_a was trained on y unrounded: the row coder and the archive's codec both take z of it
    (given the latents the codes came from), store the same streams, and read back the codes."""
    from pipeline.codec.codec import Codec
    from pipeline.codec.compress import compress
    from pipeline.data.rd_rows import hyper_of, learned_params

    model = _model("hyperprior", gain=10.0)
    x = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        model.h_a[-1].weight.mul_(100.0)  # side latents away from zero
        y = model.encode(x).mean
        z_float = torch.round(model.hyper_latent(y)).numpy().astype(np.int64)
        z_rounded = torch.round(model.hyper_latent(torch.round(y))).numpy().astype(np.int64)
    assert not np.array_equal(z_float, z_rounded)  # the two inputs give other side information
    coder = RDCoder(model)
    rows = coder.encode(x)
    cz, per = z_float.shape[1], z_float[0].size  # each stream begins with the side information
    tabs = np.repeat(np.arange(cz), per // cz)
    head, _ = coder.tables.given.decode_head(
        [r.stream for r in rows], np.tile(tabs, 6), np.arange(1, 7) * per
    )
    assert np.array_equal(head.reshape(z_float.shape), z_float)

    quantizer, params = learned_params(model)
    codec = Codec(params, hyper_of(model))
    means = [m.reshape(m.shape[0], -1) for m in y.numpy()]
    payloads, _, _ = compress(means, quantizer, codec, [y.shape[3]] * 6)
    assert payloads == [r.stream for r in rows]
    codes = np.stack([np.rint(m).astype(np.int64) + 32768 for m in means])
    raws = codec.raws(payloads, [(8, 16, 4)] * 6, np.dtype(np.uint16))
    assert np.array_equal(np.stack([np.frombuffer(r, "<u2") for r in raws]).reshape(codes.shape), codes)
    with pytest.raises(ValueError, match="latents"):
        codec.encode(codes.astype(np.uint16), 4, np.zeros((6, 8, 15), np.float32))


@pytest.mark.parametrize("prior", ["hyperprior", "factorized"])
def test_rows_of_the_two_stream_layout_still_decode_and_one_stream_a_row_is_smaller(prior):
    """Archives written before the tables' version 2 hold a side stream's length, the side
    stream and the main stream a row: they read back exactly, an encode that goes on with such
    an archive writes them alike, and the one stream a row that version 2 writes is smaller
    by the varint and (under a hyperprior) a final state."""
    import dataclasses

    from pipeline.codec.codec import Codec
    from pipeline.codec.learned import tables_from_bytes, tables_to_bytes
    from pipeline.data.rd_rows import hyper_of, learned_params

    model = _model(prior, gain=10.0)
    x = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        y = model.encode(x).mean.numpy()
    codes = (np.rint(y).astype(np.int64) + 32768).reshape(6, 8, -1)
    _, params = learned_params(model)
    stored = tables_from_bytes(params.model)
    old = dataclasses.replace(
        params, model=tables_to_bytes(stored.given, 8, stored.hyper_channels, version=1)
    )
    new_codec, old_codec = Codec(params, hyper_of(model)), Codec(old, hyper_of(model))
    latents = y.reshape(codes.shape)
    new, _ = new_codec.encode(codes.astype(np.uint16), 4, latents)
    before, _ = old_codec.encode(codes.astype(np.uint16), 4, latents)
    rounded = np.rint(y).astype(np.int64)
    if prior == "hyperprior":  # the layout FORMAT.md gives for version 1, byte for byte
        hyper = hyper_of(model)
        z = hyper.side(y)
        sides = encode_factorized(z.reshape(6, z.shape[1], -1), stored)
        mains = encode_gaussian(rounded, hyper.indexes(z, 4, 4), stored)
        assert before == [bytes([len(s)]) + s + m for s, m in zip(sides, mains, strict=True)]
        assert sum(map(len, before)) - sum(map(len, new)) >= 4 * 6
    else:
        assert before == [b"\x00" + m for m in new]
    for codec, payloads in ((old_codec, before), (new_codec, new)):
        raws = codec.raws(payloads, [(8, 16, 4)] * 6, np.dtype(np.uint16))
        assert np.array_equal(np.stack([np.frombuffer(r, "<u2") for r in raws]).reshape(codes.shape), codes)
    with pytest.raises(ValueError, match="version 3"):
        tables_to_bytes(stored.given, 8, stored.hyper_channels, version=3)
