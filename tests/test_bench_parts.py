"""The benchmark's arithmetic, checked on cases worked out by hand."""

import numpy as np
import pytest
import ray
import torch

from jobs.benches.codec import entropy_bounds
from jobs.benches.rd import bpp_at, ratios


def test_entropy_given_channel_and_left_neighbour():
    # one channel, rows of 4 positions in a 2x2 grid: 0 1 / 0 1, twice
    codes = np.array([[[0, 1, 0, 1]], [[0, 1, 0, 1]]])
    b = entropy_bounds(codes, width=2)
    assert b["symbols"] == 8
    assert b["h_channel_bytes"] == 8 / 8  # 8 fair coin flips: 8 bits
    assert b["h_channel_left_bytes"] == 0.0  # 0 has no left; 1 follows 0 always


def test_bpp_at_interpolates_and_refuses_to_extrapolate():
    curve = [{"psnr": 30.0, "bpp": 1.0}, {"psnr": 20.0, "bpp": 0.2}]
    assert abs(bpp_at(curve, 25.0) - 0.6) < 1e-12
    assert bpp_at(curve, 35.0) is None
    r = ratios([{"step_sigmas": 1, "psnr": 25.0, "bpp": 0.3}], {"jpeg": curve})
    assert abs(r[0]["jpeg"] - 0.5) < 1e-12


def test_tiles_cut_back_into_the_same_samples():
    from pipeline.data.grid import tile, untile

    rng = np.random.default_rng(0)
    for shape, grid in (((7, 8, 8), (3, 3)), ((5, 4, 6, 3), (2, 3))):  # blank cells last
        samples = rng.integers(0, 256, shape, dtype=np.uint8)
        image = tile(samples)
        assert image.shape[:2] == (grid[0] * shape[1], grid[1] * shape[2])
        assert np.array_equal(untile(image, len(samples), samples.shape[1:]), samples)
        assert np.array_equal(image[: shape[1], : shape[2]], samples[0])
        assert np.array_equal(image[: shape[1], shape[2] : 2 * shape[2]], samples[1])


def test_reconstruction_grid_has_a_row_per_rate():
    import io

    from PIL import Image

    from jobs.benches.rd import grid_picture, spread

    digits = np.arange(20 * 8 * 8, dtype=np.int64).reshape(20, 8, 8).astype(np.uint8)
    assert np.array_equal(spread(digits), digits[::2][:8])
    shown = [(1.0, spread(digits)), (4.0, spread(digits) // 2)]
    curve = [{"bytes_per_sample": 14.0, "psnr": 23.0}, {"bytes_per_sample": 9.0, "psnr": 20.0}]
    img = np.asarray(Image.open(io.BytesIO(grid_picture(digits, shown, curve))))
    zoom = 48 // 8
    assert img.shape == (3 * 8 * zoom, 260 + 8 * 8 * zoom + 7 * 2, 3)  # 2 px between digits
    top = img[: 8 * zoom : zoom, 260 : 260 + 8 * zoom : zoom, 0]
    assert np.array_equal(top, digits[0])  # the first original, pixel for pixel


def test_picture_grids_keep_cells_apart():
    from pipeline.data.grid import tile

    samples = np.zeros((5, 3, 4), np.uint8)
    image = tile(samples, columns=3, gap=2, fill=255)
    assert image.shape == (2 * 3 + 2, 3 * 4 + 2 * 2)  # no gap after the last row or column
    assert (image[3:5] == 255).all() and (image[:, 4:6] == 255).all()
    assert (image[:3, :4] == 0).all() and (image[5:, 12:] == 255).all()  # the blank sixth cell


@pytest.mark.timeout(300)
def test_the_gpu_section_runs_on_a_cpu_at_toy_sizes(tmp_path):
    """``--only gpu`` cannot run here; its code can, on the CPU, with a tiny SD-shaped VAE."""
    pytest.importorskip("diffusers")
    from jobs.benches import gpu

    tiny = dict(gpu.SD1_CONFIG, block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2)
    tiny.update(up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8, layers_per_block=1)
    ckpt = gpu.sd_checkpoint(str(tmp_path / "sd"), tiny)
    crops = gpu.image_shards(str(tmp_path / "data"), 32, 24, "JPEG", 8)
    case = gpu.Case("tiny", ckpt, 32, "JPEG", 8, 24)
    try:  # the pool starts a local Ray of its own, as the bench does
        out = gpu.measure_case(case, str(tmp_path / "data"), crops, "cpu", repeats=1)
    finally:
        ray.shutdown()
    assert out["bare_fp32_rows_s"]["encode"] > 0 and out["bare_bf16_rows_s"]["decode"] > 0
    assert out["one_reader_rows_s"] > 0
    assert out["pipeline"]["worker"]["device"] == "cpu" and len(out["pipeline"]["decode_rows_s"]) == 1
    if not torch.cuda.is_available():  # the section says why it measured nothing
        assert "no CUDA GPU" in gpu.measure("unused")["skipped"]


def test_the_host_only_figure_counts_every_row(photos, photos_ckpt):
    from jobs.benches import host
    from jobs.benches.common import load_arrays

    crops = load_arrays(str(photos / "heldout"), max_rows=64)[:64]
    out = host.measure(photos_ckpt, crops, (1, 2), repeats=1)
    assert out["rows"] == 64 and set(out["pools"]) == {"processes", "threads"}
    for r in out["pools"].values():
        assert r["speedup"]["1"]["median"] == 1.0 and r["rows_s"]["2"]["median"] > 0


def test_the_rans_speed_section_round_trips_through_parquet():
    from jobs.benches.codec import rans_speeds
    from pipeline.codec.codec import CodecConfig, calibrate_codec
    from tests.test_ctxcoder import smooth_codes

    codes = smooth_codes(24, 3, 4, 4, 30)
    params = calibrate_codec([codes], CodecConfig(name="rans"), [4])
    out = rans_speeds(codes, params, 4, repeats=2)  # it asserts the codes came back
    assert out["bytes"] > 0 and out["model_bytes"] == len(params.model)
    assert len(out["compress_mb_s"]) == len(out["decompress_mb_s"]) == 2


def test_the_latents_table_stores_each_loss_target_with_rans_too(photos, photos_ckpt):
    from jobs.benches import latents
    from jobs.benches.common import load_arrays
    from pipeline.model.checkpoint import load_checkpoint

    arrays = load_arrays(str(photos / "heldout"), max_rows=48)[:48]
    rows = latents.compare(load_checkpoint(photos_ckpt), arrays, targets=(0.5,))
    by = {r["store"]: r for r in rows}
    zstd, rans = by["vaezip loss, 0.5 dB"], by["vaezip loss, 0.5 dB, --codec rans"]
    assert rans["codec"] == "rans" and "codec" not in zstd
    assert rans["psnr"] == zstd["psnr"] and rans["pooled_loss_db"] == zstd["pooled_loss_db"]
    assert rans["bytes_per_sample"] > 0 and rans["bytes_per_sample"] != zstd["bytes_per_sample"]
    assert "vaezip loss, 0.1 dB (default), --codec rans" in by
    assert not [s for s in by if "rans" in s and "loss" not in s]  # fixed stores: zstd only


def test_the_page_says_which_run_made_each_section():
    from jobs.bench import code_version
    from jobs.benches.report.provenance import provenance

    runs = {
        "sections": {
            "latents": {
                "command": "python -m jobs.bench --only latents",
                "date": "2026-11-30",
                "commit": "abc1234",
            },
            "codec": {"command": "python -m jobs.bench --only codec", "date": "2026-11-29", "commit": None},
            "rd": {"command": "python -m jobs.bench", "date": "2026-11-25", "commit": "def5678"},
        },
        "codec": {},
        "latents": {},
        "rd": {},
        "memory": {},
    }
    runs["sections"]["rd"]["recorded_in"] = True
    lines = provenance(runs)
    in_order = ["| memory", "| codec", "| latents", "| rd"]  # SECTIONS' order
    assert [line.split(" | ")[0] for line in lines[2:6]] == in_order
    assert "not recorded" in lines[2] and "unknown" in lines[3] and "abc1234" in lines[4]
    assert lines[5].endswith("| 2026-11-25 | recorded by def5678 |")
    assert lines[7].startswith("recorded by: ")
    assert not any("chain of runs" in line for line in lines)
    version = code_version()  # this checkout's commit, "+changes" when the work tree differs
    assert version is None or version.split("+")[0].isalnum()


def test_the_calibration_section_reports_the_ratio_against_its_target():
    from jobs.benches.report.cache import calibration_section, calibration_targets

    runs = [
        {
            "model": "a",
            "encode_s": 2.0,
            "loss_s": 5.0,
            "ratio": 2.5,
            "measured_loss_db": 0.05,
            "bits_per_value": 1.8,
        },
        {
            "model": "b",
            "encode_s": 1.0,
            "loss_s": 4.0,
            "ratio": 4.0,
            "measured_loss_db": 0.09,
            "bits_per_value": 3.7,
        },
    ]
    results = {"calibration": {"rows": 2048, "max_loss_db": 0.1, "runs": runs}}
    text = "\n".join(calibration_section(results, "."))
    assert "| a | 2.00 | 5.00 | 2.50x | 0.050 | 1.800 |" in text
    assert [(met, round(x, 2)) for _, x, met, _ in calibration_targets(results)] == [
        (True, 2.5),
        (False, 4.0),
    ]
    assert calibration_section({}, ".") == [] and calibration_targets({}) == []


def test_the_cache_targets_judge_each_latent_size_apart():
    """The byte targets are judged at 256x256 tiles and at 64x64 crops, each by its smallest
    store within the bound; a store whose measured error is past the bound does not count."""
    from jobs.benches.report.cache import cache_section, cache_targets

    def store(bound, codec, x, error):
        return {
            "store": f"vaezip --max-latent-error {bound} {codec}",
            "bound": bound,
            "codec": codec,
            "bytes": 512 * x,
            "x_fp16": x,
            "error": error,
        }

    crops = [
        store(0.01, "zstd", 0.52, 0.0099),
        store(0.01, "rans", 0.30, 0.0099),
        store(0.002, "rans", 0.55, 0.002),
    ]
    tiles = [store(0.01, "rans", 0.24, 0.0099), store(0.002, "rans", 0.40, 0.0025)]
    reads = {
        name: {"median": m, "low": m, "high": m}
        for name, m in [
            ("ArchiveDataset (--max-latent-error 0.01)", 300.0),
            ("fp16 .npy per sample", 100.0),
            ("fp16 safetensors per sample", 250.0),
        ]
    }
    results = {
        "cache": {
            "blocks": [32],
            "train_s": 1.0,
            "rows": 3,
            "latent_shape": [4, 8, 8],
            "stores": crops,
            "tiles": {"rows": 2, "latent_shape": [4, 32, 32], "stores": tiles},
            "read_latents_s": reads,
            "remote": {
                "first_epoch": reads["fp16 .npy per sample"],
                "later_epochs": reads["fp16 .npy per sample"],
                "local": reads["fp16 safetensors per sample"],
                "ratio": 2.5,
            },
            "calibration": {"rows": 8, "seconds": 1.0, "encoder_seconds": 1.0, "ratio": 1.0},
        }
    }
    got = {what.split(": bytes")[0]: (round(x, 2), met) for what, x, met, _ in cache_targets(results)[:4]}
    assert got == {
        "latent cache at <= 1% error, 256x256 tiles": (0.24, True),
        "latent cache at <= 1% error, 64x64 crops": (0.30, False),
        "latent cache at <= 0.2% error, 256x256 tiles": (0.40, False),  # its error is past the bound
        "latent cache at <= 0.2% error, 64x64 crops": (0.55, False),
    }
    remote = [(round(x, 2), met) for what, x, met, _ in cache_targets(results) if "remote" in what]
    assert remote == [(2.5, False)]
    text = "\n".join(cache_section(results, "."))
    assert "2 tiles of 256x256" in text and "| vaezip --max-latent-error 0.01 rans | 122.9 | 0.240 |" in text


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_childs_peak_memory_is_its_own_not_its_parents():
    """ru_maxrss of a process started by this one begins at this one's peak; the benchmark's
    figure must not."""
    import resource
    import subprocess
    import sys

    held = np.ones(256 << 20, dtype=np.uint8)  # 256 MiB touched here, in the parent
    code = (
        "import resource; from jobs.benches.rss import peak_rss_mib; "
        "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, inherited = map(float, out.stdout.split())
    assert held.sum() == held.size
    assert own < 200 < inherited  # a bare interpreter is tens of MiB; the parent holds over 256
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 256


def test_the_digits_judge_against_the_best_classic_codec_at_each_psnr():
    """x_best is the ratio against the codec that needs the fewest bytes at the point's PSNR; a
    codec whose lowest quality is already sharper gives a lower bound, one that never gets as
    sharp does not compete; the target counts only measured ratios."""
    from jobs.benches.learned import classic_ratios
    from jobs.benches.report.learned import digits_best

    curves = {
        "jpeg": [{"psnr": 20.0, "bpp": 2.0}, {"psnr": 30.0, "bpp": 4.0}],  # 3.0 bpp at 25 dB
        "webp": [{"psnr": 22.0, "bpp": 1.0}, {"psnr": 26.0, "bpp": 2.0}],  # 1.75 at 25, floor 22 dB
        "png": [{"psnr": 24.0, "bpp": 9.0}],  # never as sharp as 25 dB
    }
    at25 = classic_ratios({"psnr": 25.0, "bpp": 1.4}, curves)
    assert at25["x_jpeg"] == pytest.approx(1.4 / 3.0) and at25["x_webp"] == pytest.approx(1.4 / 1.75)
    assert at25["x_png"] is None
    assert at25["x_best"] == pytest.approx(0.8) and at25["x_best_bound"] == "="
    at21 = classic_ratios({"psnr": 21.0, "bpp": 0.5}, curves)  # below WebP's lowest quality
    assert at21["x_webp"] == pytest.approx(0.5) and at21["x_webp_bound"] == ">="
    assert at21["x_best"] == pytest.approx(0.5) and at21["x_best_bound"] == ">="
    results = {"learned": {"digits": {"points": [at25 | {"psnr": 25.0}, at21 | {"psnr": 21.0}]}}}
    assert digits_best(results) == pytest.approx(0.8)  # the bound at 21 dB does not count


def test_the_learned_codec_is_set_against_compressais_curve_beyond_its_ends():
    """Below the peer's lowest PSNR a point's ratio is a lower bound over the peer's smallest
    bytes (the peer does as well for fewer); inside its curve it is interpolated; above it there
    is none. The PSNR at equal bytes is taken on the peer's curve of the same prior."""
    from jobs.benches.learned import compare

    def at(prior, nbytes, db):
        return {"prior": prior, "bpp": 8 * nbytes / 4096, "psnr": db}

    hyper = [at("hyperprior", 80.0, 22.0), at("hyperprior", 180.0, 23.0)]
    peer = {"points": [*hyper, at("factorized", 250.0, 22.0)]}
    low, inside = at("hyperprior", 100.0, 21.9), at("hyperprior", 150.0, 22.5)
    high, fact = at("hyperprior", 300.0, 23.5), at("factorized", 250.0, 22.0)
    webp = [at("webp", 120.0, 26.0), at("webp", 200.0, 28.0)]
    compare([low, inside, high, fact], {"webp": webp}, peer)
    assert low["x_compressai"] == pytest.approx(100 / 80) and low["x_compressai_bound"] == ">="
    assert low["db_over_compressai"] == pytest.approx(21.9 - 22.2)  # 100 B: a fifth of the way up
    assert inside["x_compressai"] == pytest.approx(150 / 130) and inside["x_compressai_bound"] == "="
    assert inside["db_over_compressai"] == pytest.approx(22.5 - 22.7)
    assert high["x_compressai"] is None and high["db_over_compressai"] is None
    assert fact["x_compressai"] == pytest.approx(1.0) and fact["db_over_compressai"] == pytest.approx(0.0)
    assert low["x_webp"] == pytest.approx(100 / 120) and low["x_webp_bound"] == ">="
    compare([low], {}, None)  # without the peer the fields stay as they were
    assert low["x_compressai"] == pytest.approx(100 / 80)


def test_the_learned_section_judges_the_hyperprior_against_compressais():
    """The target takes the worst of vaezip's hyperprior points against CompressAI's hyperprior
    curve (a factorized point is not judged against it); the page compares each CompressAI
    point with vaezip's curve of its prior, and says so when CompressAI was not run."""
    from jobs.benches.report.learned import compressai_worst, learned_section, learned_targets

    def point(prior, lmbda, nbytes, db, x=None):
        return {
            "prior": prior,
            "lmbda": lmbda,
            "bytes_per_sample": nbytes,
            "side_bytes_per_sample": 10.0,  # CompressAI's side string
            "side_ideal_bytes_per_sample": 9.0,  # vaezip's side information under its prior
            "bpp": 8 * nbytes / 4096,
            "psnr": db,
            "x_elbo": None,
            "x_webp": None,
            "x_jpeg": None,
            "x_compressai": x,
            "train_cpu_s": 1.0,
            "encode_codes_mb_s": 90.0,
            "decode_codes_mb_s": 200.0,
        }

    ours = [
        point("hyperprior", 0.0018, 100.0, 22.0, 0.9),
        point("hyperprior", 0.025, 300.0, 23.0, 1.1),
        point("factorized", 0.0067, 300.0, 22.5, 0.5),
    ]
    peer = {"compressai": "1.2.8", "torch": "2", "points": [point("hyperprior", 0.0067, 150.0, 22.5)]}
    results = {
        "learned": {
            "points": ours,
            "compressai": peer,
            "steps": 2,
            "batch": 2,
            "train_rows": 4,
            "heldout_rows": 2,
            "threads": 1,
            "elbo": [],
            "webp": [point("webp", 0, 200.0, 29.0) | {"quality": 5}],
            "longer": [],
        }
    }
    assert compressai_worst(results) == (1.1, False)
    text = "\n".join(learned_section(results, "."))
    # vaezip's hyperprior curve holds 200 bytes at 22.5 dB: CompressAI's 150 are 0.75x of them
    assert "| hyperprior | 0.0067 | 150.0 | 10.0 | 22.50 | 0.75 | 1 |" in text
    ours[1]["x_compressai_bound"] = ">="  # a lower bound is never a pass, even under 1.0
    ours[1]["x_compressai"] = 0.8
    assert compressai_worst(results) == (0.9, True)
    row = [t for t in learned_targets(results) if "CompressAI" in t[0]]
    assert row[0][1:3] == (0.9, False) and "lower bounds" in row[0][0]
    results["learned"]["compressai"] = None
    assert compressai_worst(results) is None
    assert "were not trained in this run" in "\n".join(learned_section(results, "."))


def test_a_lambda_trained_from_several_seeds_is_judged_by_their_mean():
    """Each (prior, lambda) becomes one point: the mean of its seeds' bytes, bpp and PSNR, with
    their range and count (the rest is the first seed's); the page lists each seed's model."""
    from jobs.benches.learned import mean_points
    from jobs.benches.report.learned import _seed_lines

    raw = [
        {"prior": "hyperprior", "lmbda": lmbda, "seed": s, "bytes_per_sample": nbytes, "psnr": db}
        | {"bpp": 8 * nbytes / 4096, "encode_codes_mb_s": 50.0 + s}
        for lmbda, s, nbytes, db in (
            (0.0018, 0, 80.0, 22.0),
            (0.0018, 1, 90.0, 22.6),
            (0.025, 0, 250.0, 23.0),
        )
    ]
    low, high = mean_points(raw)
    assert (low["lmbda"], low["seeds"], high["seeds"]) == (0.0018, 2, 1)
    assert low["bytes_per_sample"] == pytest.approx(85.0) and low["psnr"] == pytest.approx(22.3)
    assert low["bpp"] == pytest.approx(8 * 85.0 / 4096) and low["psnr_range"] == [22.0, 22.6]
    assert low["bytes_per_sample_range"] == [80.0, 90.0] and low["encode_codes_mb_s"] == 50.0
    assert "seed" not in low and high["bytes_per_sample"] == 250.0
    peer = [p | {"bytes_per_sample": p["bytes_per_sample"] - 5} for p in raw]
    lines = _seed_lines({"seeds": 2, "seed_points": raw, "compressai": {"seed_points": peer}})
    assert "| vaezip | 0.0018 | 1 | 90.0 | 22.60 |" in lines
    assert "| CompressAI | 0.0018 | 1 | 85.0 | 22.60 |" in lines
    assert _seed_lines({"seeds": 1, "seed_points": raw}) == []
