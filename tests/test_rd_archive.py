"""An rd model's archive: encode and decode jobs with its own coder (codec "learned")."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.codec.format import read_meta
from pipeline.data.archive import iter_latents
from pipeline.data.rd_rows import hyper_of
from pipeline.model.checkpoint import load_checkpoint, save_checkpoint
from pipeline.model.nets import RDConfig, build_model
from pipeline.train.dataset import read_samples, stack_for_model
from pipeline.train.training import TrainSettings, train
from tests.helpers import decode, encode

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def rd_ckpts(tmp_path_factory, photos):
    out = {}
    for prior in ("hyperprior", "factorized"):
        torch.manual_seed(0)
        config = RDConfig(latent_channels=8, hidden_channels=16, prior=prior)
        data, _ = stack_for_model(read_samples(str(photos / "train"), max_rows=256), config)
        model = build_model(config)
        settings = TrainSettings(epochs=2, batch_size=32, objective="rd", lmbda=0.01, val_fraction=0.0)
        train(model, data, settings, torch.device("cpu"))
        path = str(tmp_path_factory.mktemp("rd") / prior)
        save_checkpoint(model, path)
        out[prior] = path
    return out


@pytest.mark.parametrize("prior", ["hyperprior", "factorized"])
def test_an_rd_archive_holds_the_rounded_latents_and_decodes_to_the_models_images(
    tmp_path, photos, rd_ckpts, local_ray, prior
):
    from pipeline.data.readers.parquet import decode_image

    ckpt_uri = rd_ckpts[prior]
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    assert encode(photos / "heldout", ckpt_uri, arch) == 0
    files = sorted(arch.glob("*.vz.parquet"))
    meta = read_meta(str(files[0]))
    assert meta.codec.name == "learned" and meta.quantizer.mode == "rounded"
    assert json.loads((arch / "manifest.json").read_text())["rows"] == 605

    ckpt = load_checkpoint(ckpt_uri)
    src = np.stack([s.array for s in read_samples(str(photos / "heldout"))])
    x = torch.from_numpy(src.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        y = torch.round(ckpt.model.encode(x).mean)
        direct = ckpt.model.decode(y, (32, 32)).clamp(0, 1).numpy().transpose(0, 2, 3, 1)
    direct8 = np.rint(direct * 255).astype(np.uint8)
    stored = [z for f in files for b in iter_latents(str(f), hyper=hyper_of(ckpt.model)) for z in b.latents]
    assert np.array_equal(np.stack(stored), y.numpy())  # exactly the rounded latents
    if prior == "hyperprior":  # without the model's hyper-synthesis the codes cannot be read
        with pytest.raises(Exception, match="needs the checkpoint"):
            next(iter_latents(str(files[0])))
    from pipeline.loaders.torch_data import ArchiveDataset

    read = [np.asarray(item["latent"]) for item in ArchiveDataset(str(arch), checkpoint=ckpt_uri)]
    assert np.array_equal(np.stack(read), y.numpy())  # the training reader, given the checkpoint

    assert decode(arch, ckpt_uri, rec, "--format", "parquet") == 0
    out = pa.concat_tables([pq.read_table(p) for p in sorted(rec.glob("heldout-*.parquet"))]).to_pydict()
    images = np.stack([decode_image(img["bytes"], "x", 0) for img in out["image"]])
    assert images.shape == src.shape
    assert np.abs(images.astype(int) - direct8.astype(int)).max() <= 1
    assert (images != direct8).mean() < 0.01


def test_a_corrupt_learned_row_is_refused_naming_its_file_and_row(tmp_path, photos, rd_ckpts, local_ray):
    from pipeline.core.errors import InputError

    ckpt_uri = rd_ckpts["hyperprior"]
    arch = tmp_path / "arch"
    assert encode(photos / "heldout", ckpt_uri, arch) == 0
    path = sorted(arch.glob("*.vz.parquet"))[0]
    table = pq.read_table(path)
    codes = table.column("vz_codes").to_pylist()
    codes[5] = codes[5][:-4] + bytes(4)  # the row's last stream word zeroed
    bad = table.set_column(table.schema.get_field_index("vz_codes"), "vz_codes", pa.array(codes, pa.binary()))
    out = tmp_path / "bad.vz.parquet"
    pq.write_table(bad, out)
    hyper = hyper_of(load_checkpoint(ckpt_uri).model)
    with pytest.raises(InputError) as err:
        for _ in iter_latents(str(out), hyper=hyper):
            pass
    assert str(out) in str(err.value) and "row 5" in str(err.value)
