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
    lossless, half = baselines(samples, target_db=30.0, peak=400.0)
    assert lossless.setting == "lossless" and 0 < lossless.bytes <= 8 * 16 * 16 * 4 + 64
    expected = np.mean([psnr(x, x.astype(np.float16), 400.0) for x in samples])
    assert half.setting == "float16" and half.psnr_db == expected
