"""pipeline.data.baseline: the classic codecs at equal quality, measured on the samples themselves."""

import numpy as np

from pipeline.data.baseline import baselines, psnr


def test_grey_and_colour_images_meet_the_target_with_each_codec(digits):
    grey = [np.asarray(x, np.uint8) for x in digits[0][:30]]  # 8x8 real digits
    colour = [np.repeat(x[..., None], 3, axis=-1) for x in grey]
    for samples in (grey, colour):
        rows = {b.codec: b for b in baselines(samples, target_db=25.0, peak=255.0)}
        assert set(rows) == {"PNG", "JPEG per sample", "JPEG tiled", "WEBP per sample", "WEBP tiled"}
        assert rows["PNG"].setting == "lossless" and rows["PNG"].bytes > 0
        for name in ("JPEG per sample", "JPEG tiled", "WEBP per sample", "WEBP tiled"):
            b = rows[name]
            assert b.reached and b.psnr_db >= 25.0 and b.bytes > 0, b
        assert rows["JPEG tiled"].bytes < rows["JPEG per sample"].bytes  # headers spread


def test_arrays_get_lossless_and_float16_figures():
    rng = np.random.default_rng(0)
    samples = [rng.normal(1000.0, 50.0, (16, 16)).astype(np.float32) for _ in range(8)]
    lossless, half, *lossy = baselines(samples, target_db=30.0, peak=400.0, lo=800.0)
    assert lossless.setting == "lossless" and 0 < lossless.bytes <= 8 * 16 * 16 * 4 + 64
    expected = np.mean([psnr(x, x.astype(np.float16), 400.0) for x in samples])
    assert half.setting == "float16" and half.psnr_db == expected
    assert [b.codec for b in lossy] == [
        "uniform quantization + zstd",
        "JPEG of the values in 8 bits",
        "WEBP of the values in 8 bits",
    ]  # floats: no JPEG 2000


def _scan_tiles():
    from skimage import data

    scan = (data.camera().astype(np.uint32) * 215 // 255).astype(np.uint16)  # 0..215 in a uint16
    return [scan[y : y + 64, x : x + 64] for y in range(0, 256, 64) for x in range(0, 256, 64)]


def test_integers_above_8_bits_get_jpeg2000_and_the_lossy_baselines_reach_the_target():
    samples = _scan_tiles()
    rows = {b.codec: b for b in baselines(samples, target_db=30.0, peak=220.0, lo=0.0)}
    assert set(rows) == {
        "zstd -19 of the raw values",
        "float16 + zstd -19",
        "uniform quantization + zstd",
        "JPEG of the values in 8 bits",
        "WEBP of the values in 8 bits",
        "JPEG 2000 (16-bit)",
    }
    for name in ("uniform quantization + zstd", "JPEG of the values in 8 bits", "JPEG 2000 (16-bit)"):
        b = rows[name]
        assert b.reached and 30.0 <= b.psnr_db < 60.0 and b.bytes > 0, b  # at the target, not lossless
    # a lossy codec at 30 dB spends far less than the lossless stores: the comparison a user needs
    assert rows["JPEG 2000 (16-bit)"].bytes < rows["zstd -19 of the raw values"].bytes / 2
    assert rows["uniform quantization + zstd"].bytes < rows["float16 + zstd -19"].bytes


def test_verify_ends_with_the_smallest_at_equal_quality(capsys):
    from jobs.verify import print_baselines
    from pipeline.core.value_range import ValueRange

    samples = _scan_tiles()
    firsts = [(x, 30.0) for x in samples]
    print_baselines(firsts, bytes_per_row=50_000.0, value_range=ValueRange(0, 220))  # a poor archive
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("smallest at vaezip's quality: ") and "vaezip takes" in last
    print_baselines(firsts, bytes_per_row=1.0, value_range=ValueRange(0, 220))  # an unbeatable one
    assert (
        capsys.readouterr().out.strip().splitlines()[-1].startswith("smallest at vaezip's quality: vaezip (")
    )
