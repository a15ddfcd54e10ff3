"""Data in its own units: a 16-bit scan decodes to uint16 and a raster in metres decodes in
metres, the range recorded in the checkpoint and in every archive file; values outside the
range a model was trained on are refused with the file and row."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs import train as train_job
from jobs import verify as verify_job
from jobs._cli import run_main
from pipeline.codec.format import archive_files, read_meta
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.value_range import ValueRange
from pipeline.data.samples import SampleLayout, to_model
from pipeline.model.checkpoint import load_checkpoint
from pipeline.model.nets import MLPConfig
from pipeline.train.dataset import RawSample, choose_range
from tests.format_reader import read_archive_codes
from tests.helpers import decode, encode

pytestmark = [pytest.mark.timeout(300)]


def _tiles(image: np.ndarray, size: int = 16) -> np.ndarray:
    h, w = (s - s % size for s in image.shape[:2])
    t = image[:h, :w].reshape(h // size, size, w // size, size)
    return t.swapaxes(1, 2).reshape(-1, size, size)


@pytest.fixture(scope="module")
def camera():
    from skimage import data

    return data.camera()  # 512x512 uint8, a real photograph


def _train(inp, out, *extra):
    argv = ["--input", str(inp), "--output", str(out), "--epochs", "4", "--model", "mlp", "--latent", "12"]
    assert run_main(train_job.main, [*argv, *extra]) == 0
    return str(out)


def _decoded_against_the_decoder(arch, ckpt_uri, rec):
    """key -> (restored sample, what the decoder gives on the archive's codes, mapped to units)."""
    ckpt = load_checkpoint(ckpt_uri)
    (name,) = archive_files(str(arch))
    meta = read_meta(name)
    rows = read_archive_codes(name)
    with torch.inference_mode():
        x = ckpt.model.decode(torch.from_numpy(np.stack([r["latent"] for r in rows]))).clamp(0, 1).numpy()
    stem = name.rsplit("/", 1)[1][: -len(".vz.parquet")]
    restored = np.load(rec / f"{stem}.npy")
    keys = pq.read_table(rec / f"{stem}.keys.parquet")["key"].to_pylist()
    assert keys == [r["key"] for r in rows]
    return meta, restored, x.reshape(restored.shape)


def test_a_16_bit_scan_decodes_to_uint16_in_its_units(camera, tmp_path, local_ray, capsys):
    scan = np.minimum(camera.astype(np.uint32) * 257 + 100, 65535).astype(np.uint16)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "scan.npy", _tiles(scan))
    ckpt = _train(tmp_path / "in", tmp_path / "ckpt", "--val-fraction", "0")  # one image: no rows to spare
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["value_range"] == [0, 65535]
    report = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert report["val_rows"] == 0 and report["train_rows"] == 1024
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(tmp_path / "in", ckpt, arch) == 0
    assert decode(arch, ckpt, rec) == 0
    meta, restored, x = _decoded_against_the_decoder(arch, ckpt, rec)
    assert meta.value_range == ValueRange(0, 65535)
    assert restored.dtype == np.uint16
    assert np.array_equal(restored, np.clip(np.rint(x * 65535.0), 0, 65535).astype(np.uint16))
    assert restored.max() > 255  # in 16-bit units, not pixels scaled to 0..255
    capsys.readouterr()
    assert run_main(verify_job.main, ["--original", str(tmp_path / "in"), "--restored", str(rec)]) == 0
    line = capsys.readouterr().out
    psnr = float(line.split("mean PSNR ")[1].split(" dB")[0])
    assert "(peak 65535" in line and psnr > 10  # was -21 dB against a peak of 1.0


def test_a_raster_in_metres_decodes_in_metres(camera, tmp_path, local_ray, capsys):
    metres = (camera.astype(np.float32) / 255.0 * 3050.0 - 50.0).astype(np.float32)  # -50..3000 m
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "dem.npy", _tiles(metres))
    ckpt = _train(tmp_path / "in", tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["value_range"] == pytest.approx(
        [float(metres.min()), float(metres.max())]
    )
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(tmp_path / "in", ckpt, arch) == 0
    assert decode(arch, ckpt, rec) == 0
    meta, restored, x = _decoded_against_the_decoder(arch, ckpt, rec)
    r = meta.value_range
    assert restored.dtype == np.float32
    assert np.array_equal(restored, (x.astype(np.float64) * r.span + r.lo).astype(np.float32))
    assert -50.0 <= restored.min() and restored.max() <= 3000.0 + 1e-3
    capsys.readouterr()
    args = ["--original", str(tmp_path / "in"), "--restored", str(rec), "--archive", str(arch)]
    assert run_main(verify_job.main, [*args, "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "zstd -19 of the raw values" in out and "float16 + zstd -19" in out
    assert "uniform quantization + zstd" in out and "JPEG of the values in 8 bits" in out  # lossy ones too
    assert "smallest at vaezip's quality: " in out.strip().splitlines()[-1]
    rmse = float(out.split("RMSE ")[1].split(",")[0])
    assert "values -50..3000" in out and 1.0 < rmse < 1500.0  # metres, not a [0, 1] error
    assert "x the values as float16" in out


def test_values_outside_the_models_range_are_refused_with_file_and_row(tmp_path):
    config = MLPConfig(input_dim=4, latent_dim=2)
    with pytest.raises(
        InputError, match=r"dem\.npy row 7: float32 values -3..2 lie outside the value range 0..1"
    ):
        to_model(np.array([0, 1, 2, -3], np.float32), config, "dem.npy", 7)
    with pytest.raises(InputError, match=r"row 3: uint16 values 0..4000 lie outside the value range 0..255"):
        to_model(np.array([0, 1, 2, 4000], np.uint16), config, "s.npy", 3)
    wide = ValueRange(-50.0, 3000.0)
    with pytest.raises(InputError, match="outside the value range -50..3000 the model was trained on"):
        to_model(np.array([0, 1, 2, 3001], np.float32), config, "dem.npy", 0, wide)
    x, layout = to_model(np.array([-50, 0, 1475, 3000], np.float32), config, "dem.npy", 0, wide)
    assert x.tolist() == pytest.approx([0.0, 50 / 3050, 0.5, 1.0])
    assert layout.restore(x).tolist() == pytest.approx([-50, 0, 1475, 3000], abs=1e-3)


def test_auto_ranges_and_their_defaults():
    def samples(a):
        return [RawSample("s", 0, np.asarray(a))]

    def auto(a, margin=0.0):
        return choose_range("auto", samples(a), margin).value_range

    assert auto(np.zeros(3, np.uint16)) == ValueRange(0, 65535)  # nothing to fit: the type
    assert choose_range(None, samples(np.zeros(3, np.uint8))).value_range == ValueRange(0, 255)
    assert auto(np.array([3, 250], np.uint8)) == ValueRange(0, 255)  # fills most of it
    assert auto(np.array([0, 200], np.int64)) == ValueRange(0, 255)  # pixels
    assert auto(np.array([0.1, 0.9], np.float32)) == ValueRange(0, 1)
    assert auto(np.array([-3.0, 12.5])) == ValueRange(-3.0, 12.5)
    assert choose_range("1,5", samples(np.zeros(3))).value_range == ValueRange(1, 5)
    # integers that fill a sliver of their type: the data's extent, rounded outward
    scan = choose_range("auto", samples(np.array([0, 17, 215], np.uint16)))
    assert scan.value_range == ValueRange(0, 220) and "extent 0..215" in scan.why
    assert auto(np.array([236, 1076], np.int16)) == ValueRange(230, 1080)
    assert auto(np.array([236, 1076], np.int16), margin=0.1) == ValueRange(100, 1200)  # 152..1160 outward
    assert auto(np.array([-1437, 2205], np.int32)) == ValueRange(-1500, 2300)
    assert auto(np.array([65000, 65535], np.uint16)) == ValueRange(65000, 65535)  # clipped to the type
    with pytest.raises(ConfigError, match="LO,HI"):
        choose_range("1", samples(np.zeros(3)))
    with pytest.raises(ConfigError, match="finite LO < HI"):
        choose_range("5,1", samples(np.zeros(3)))
    # without a recorded range, uint8 pixels restore exactly as they always did
    lay = SampleLayout((2,), "uint8")
    assert lay.restore(np.array([0.5, 1.0], np.float32)).tolist() == [128, 255]


def test_one_large_photo_is_enough_to_train_on_and_archives_whole(tmp_path, local_ray, capsys):
    from PIL import Image
    from skimage import data

    photo = data.astronaut()[:320, :288]  # one real photo, 320x288x3
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "astronaut.png")
    argv = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "ckpt"), "--crop", "32"]
    argv += ["--crops-per-image", "96", "--epochs", "2", "--model", "conv", "--base-channels", "8"]
    assert run_main(train_job.main, argv) == 0
    report = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert report["train_rows"] + report["val_rows"] == 96
    ckpt = load_checkpoint(str(tmp_path / "ckpt"))
    assert ckpt.config.kind == "conv" and ckpt.value_range == ValueRange(0, 255)
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(tmp_path / "in", str(tmp_path / "ckpt"), arch) == 0
    assert decode(arch, str(tmp_path / "ckpt"), rec, "--format", "images") == 0
    restored = np.asarray(Image.open(rec / "astronaut.png"))
    assert restored.shape == photo.shape and restored.dtype == np.uint8  # the whole image
    with pytest.raises(
        InputError, match=r"astronaut\.png row 0: a sample of shape \(320, 288, 3\) has no 400x400 crop"
    ):
        from pipeline.train.dataset import random_crops, read_samples

        random_crops(read_samples(str(tmp_path / "in")), 400)


def test_tiles_go_in_with_keys_naming_them_and_come_back_as_whole_images(
    tmp_path, photos_ckpt, local_ray, capsys
):
    from PIL import Image
    from skimage import data

    images = {"astronaut": data.astronaut()[:150, :130], "coffee": data.coffee()[:70, :90]}
    (tmp_path / "in").mkdir()
    for name, x in images.items():
        Image.fromarray(x).save(tmp_path / "in" / f"{name}.png")
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(tmp_path / "in", photos_ckpt, arch, "--tile", "64") == 0
    (name,) = archive_files(str(arch))
    assert read_meta(name).tile == 64 and read_meta(name).tile_margin == 20  # the encoder's reach
    rows = {r["key"]: r for r in read_archive_codes(name)}
    assert sorted(rows)[:3] == ["astronaut@0,0", "astronaut@0,128", "astronaut@0,64"]
    assert len(rows) == 3 * 3 + 2 * 2  # 150x130 in 64-pixel tiles, 70x90
    assert rows["astronaut@128,128"]["shape"] == [22, 2, 3]  # the corner's leftover
    assert rows["astronaut@128,128"]["latent"].shape == (4, 6, 1)  # its own cells alone
    assert decode(arch, photos_ckpt, rec, "--format", "images") == 0
    index = pq.read_table(rec / "images-00000.index.parquet").to_pydict()
    assert index["key"] == list(images)  # one row per image, its key the file's name without .png
    assert index["path"] == [f"{k}.png" for k in images]
    model = load_checkpoint(photos_ckpt).model
    for key, x in images.items():
        # the tiles' latents laid in one grid and decoded at once: what decode gives in context
        grid = np.zeros((4, -(-x.shape[0] // 4), -(-x.shape[1] // 4)), np.float32)
        for k, r in rows.items():
            base, _, place = k.partition("@")
            if base == key:
                y, x0 = (int(v) // 4 for v in place.split(","))
                grid[:, y : y + r["latent"].shape[1], x0 : x0 + r["latent"].shape[2]] = r["latent"]
        with torch.inference_mode():
            out = model.decode(torch.from_numpy(grid[None]), x.shape[:2])[0].clamp(0, 1).numpy()
        expected = np.rint(out.transpose(1, 2, 0) * 255).astype(np.uint8)
        restored = np.asarray(Image.open(rec / f"{key}.png"))
        assert restored.shape == x.shape
        diff = np.abs(restored.astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float sums in another order
    # verify --checkpoint puts the unquantized tiles together the same way: the quantizing cost
    args = ["--original", str(tmp_path / "in"), "--restored", str(rec), "--archive", str(arch)]
    assert run_main(verify_job.main, [*args, "--checkpoint", photos_ckpt]) == 0
    out = capsys.readouterr().out
    assert "verified 2 rows: mean PSNR" in out and "quantizing cost" in out
