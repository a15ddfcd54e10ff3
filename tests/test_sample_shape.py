"""--sample-shape: a 2-D raster in an .npz read as one image, not as one sample per row (a new
user's --array-key elevation trained an MLP on 344 rows of shape (403,))."""

import numpy as np
import pytest

from jobs import train as train_job
from jobs import verify as verify_job
from jobs._cli import run_main
from pipeline.core.errors import ConfigError, InputError
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.readers.base import Limits
from tests.helpers import decode, encode


@pytest.fixture
def raster(tmp_path):
    from skimage import data

    elevation = data.camera()[:96, :128].astype(np.int16) * 4 + 236  # metres, 236..1256
    folder = tmp_path / "in"
    folder.mkdir()
    np.savez(folder / "dem.npz", elevation=elevation, lat=np.linspace(40, 41, 96))
    return folder, elevation


def test_a_whole_array_is_one_sample(raster):
    folder, elevation = raster
    rows = [
        s
        for b in iter_batches(str(folder / "dem.npz"), ReadOptions(array_key="elevation"))
        for s in b.samples
    ]
    assert len(rows) == 96 and rows[0].shape == (128,)  # the default: rows
    whole = ReadOptions(array_key="elevation", array_samples="whole")
    (batch,) = list(iter_batches(str(folder / "dem.npz"), whole))
    assert len(batch.samples) == 1 and np.array_equal(batch.samples[0], elevation) and batch.columns == {}
    small = ReadOptions(array_key="elevation", array_samples="whole", limits=Limits(max_pixels=1000))
    with pytest.raises(InputError, match=r"dem\.npz\[elevation\] row 0: a sample of shape \(96, 128\)"):
        list(iter_batches(str(folder / "dem.npz"), small))
    with pytest.raises(ConfigError, match="--sample-shape must be one of"):
        ReadOptions(array_samples="image")


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_a_raster_trains_encodes_and_decodes_as_one_image(raster, tmp_path, capsys):
    folder, elevation = raster
    ckpt = tmp_path / "ckpt"
    shape = ["--array-key", "elevation", "--sample-shape", "whole"]
    argv = ["--input", str(folder), "--output", str(ckpt), *shape]
    assert run_main(train_job.main, [*argv, "--crop", "32", "--max-steps", "30", "--val-fraction", "0"]) == 0
    assert "conv" in (ckpt / "config.json").read_text()  # an image model, not an MLP over rows
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(folder, str(ckpt), arch, *shape) == 0
    assert decode(arch, str(ckpt), rec) == 0
    restored = np.load(rec / "dem.npy")
    assert restored.shape == (1, 96, 128) and restored.dtype == np.int16
    capsys.readouterr()
    args = ["--original", str(folder), "--restored", str(rec), *shape]
    assert run_main(verify_job.main, args) == 0
    assert "verified 1 rows" in capsys.readouterr().out
