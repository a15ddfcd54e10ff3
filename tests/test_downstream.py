"""Reading an archive the ways downstream users do: a PyTorch IterableDataset (split across
DataLoader workers and ranks) and Ray Data, checked against FORMAT.md's own decoder."""

import os

import numpy as np
import pytest
import ray
from torch.utils.data import DataLoader

from pipeline.core.errors import ConfigError, InputError
from pipeline.loaders.raydata import read_archive, with_latents, with_samples
from pipeline.loaders.torch_data import ArchiveDataset
from tests.format_reader import read_archive_codes
from tests.helpers import direct_reconstructions, encode

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, digits_dir, digits_ckpt):
    arch = tmp_path_factory.mktemp("arch")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert encode(digits_dir, digits_ckpt, arch) == 0
    finally:
        ray.shutdown()
    return str(arch)


@pytest.fixture(scope="module")
def reference(archive):
    """key -> (latent, label) as the third-party decoder reads them."""
    import pyarrow.parquet as pq

    out = {}
    for name in sorted(os.listdir(archive)):
        if name.endswith(".vz.parquet"):
            labels = pq.read_table(os.path.join(archive, name), columns=["label"])["label"]
            for r, label in zip(
                read_archive_codes(os.path.join(archive, name)), labels.to_pylist(), strict=True
            ):
                out[r["key"]] = (r["latent"], label)
    return out


def test_dataset_yields_latents_keys_and_columns(archive, reference):
    items = list(ArchiveDataset(archive))
    assert [i["key"] for i in items] == list(reference)  # file order, row order
    for item in items:
        latent, label = reference[item["key"]]
        assert item["latent"].dtype == np.float32 and np.array_equal(item["latent"], latent)
        assert item["label"] == label


def test_dataset_splits_rows_across_ranks_and_workers(archive, reference):
    seen, counts = [], {}
    for remainder in ("keep", "pad", "drop"):
        got = []
        for rank in range(2):
            ds = ArchiveDataset(
                archive, rank=rank, world_size=2, columns=[], remainder=remainder, num_workers=2
            )
            items = list(DataLoader(ds, batch_size=None, num_workers=2))
            assert items and all("label" not in i for i in items) and len(items) == len(ds)
            got.append([i["key"] for i in items])
        counts[remainder] = [len(g) for g in got]
        seen = got[0] + got[1]
        if remainder == "keep":
            assert sorted(seen) == sorted(reference)  # each row exactly once, 1,797 rows
        elif remainder == "pad":  # the stream wrapped round: 1,800 = 4 units of 450
            assert set(seen) == set(reference) and len(seen) == 1800
        else:  # 4 units of 449: the last 1 row left out
            assert len(set(seen)) == len(seen) == 1796
    assert counts == {"keep": [899, 898], "pad": [900, 900], "drop": [898, 898]}
    assert len(ArchiveDataset(archive).files) == 4


def test_shuffled_epochs_differ_and_repeat_for_a_seed(archive, reference):
    def keys(seed, epoch, **kw):
        ds = ArchiveDataset(archive, shuffle=True, seed=seed, columns=[], remainder="keep", **kw)
        ds.set_epoch(epoch)
        return [i["key"] for i in ds]

    first, again, other = keys(0, 0), keys(0, 0), keys(0, 1)
    assert first == again and first != other and sorted(first) == sorted(other) == sorted(reference)
    assert first != keys(1, 0) and first != list(reference)  # not the file order
    tight = keys(0, 0, shuffle_buffer=1)  # no buffer: the files shuffled, rows in order in each
    assert sorted(tight) == sorted(reference) and tight != first


def test_batches_are_typed_and_resume_where_they_stopped(archive, reference):
    import torch

    ds = ArchiveDataset(archive, shuffle=True, seed=3, batch_size=64, dtype=torch.float16, remainder="drop")
    ds.set_epoch(2)
    full = list(ds)
    assert len(full) == len(ds) == 1797 // 64
    assert all(b["latent"].dtype == torch.float16 and b["latent"].shape == (64, 8) for b in full)
    assert all(isinstance(b["label"], list) and len(b["label"]) == 64 for b in full)
    k = full[0]["key"][5]
    assert torch.equal(full[0]["latent"][5], torch.from_numpy(reference[k][0]).to(torch.float16))
    ds.load_state_dict(ds.state_dict(batches=10) | {"epoch": 2})
    assert [b["key"] for b in ds] == [b["key"] for b in full[10:]]  # exactly the rest
    with pytest.raises(ConfigError, match="seed 9"):
        ds.load_state_dict({"epoch": 0, "seed": 9, "batches": 0})


def _ddp(archive: str, tmp_path, batch_size: int) -> list[dict]:
    """Two processes under torch.distributed (gloo), each a DataLoader of two workers."""
    import json

    import torch.multiprocessing as mp

    from tests.ddp_reader import run

    args = (2, archive, str(tmp_path / "store"), str(tmp_path), batch_size)
    mp.start_processes(run, args=args, nprocs=2, start_method="spawn")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.timeout(240)
def test_ddp_ranks_get_equal_disjoint_batches_every_epoch(archive, reference, tmp_path):
    ranks = _ddp(archive, tmp_path, 16)
    per_rank = 1797 // 4 // 16 * 2  # 4 units of 449 rows, 28 batches of 16 a unit, 2 units a rank
    for epoch in range(2):
        batches = [r["epochs"][epoch] for r in ranks]
        assert [len(b) for b in batches] == [per_rank, per_rank]  # equal: DDP never waits
        keys = [k for b in batches for batch in b for k in batch["keys"]]
        assert len(keys) == len(set(keys)) == per_rank * 2 * 16 and set(keys) <= set(reference)
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # another order each epoch
    assert all(r["len"] == per_rank and r["sum"] == 2 * per_rank for r in ranks)
    for r in ranks:  # resumed after 5 batches of epoch 1: exactly its other batches
        assert r["resumed"] == r["epochs"][1][5:]


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory, photos_ckpt):
    """120 photo crops of three shapes (50 of 32x32, 40 of 32x48, 30 of 48x32) in a random
    order, as image files grouped 32 to an archive file: every file holds several shapes."""
    from PIL import Image
    from skimage import data

    src = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    pictures = [data.astronaut(), data.coffee(), data.chelsea()]
    sizes = [(32, 32)] * 50 + [(32, 48)] * 40 + [(48, 32)] * 30
    for i, j in enumerate(rng.permutation(len(sizes))):
        (h, w), (y, x) = sizes[j], rng.integers(0, 250, 2)
        Image.fromarray(pictures[i % 3][y : y + h, x : x + w]).save(src / f"{i:03d}.png")
    arch = tmp_path_factory.mktemp("bucketed")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        assert encode(src, photos_ckpt, arch, "--images-per-shard", "32", "--max-latent-error", "0.01") == 0
    finally:
        ray.shutdown()
    return str(arch)


def test_a_bucketed_archive_gives_every_rank_and_worker_as_many_batches(bucketed):
    """Batches hold one shape, so each shape's rows are cut apart in whole batches: every
    (rank, worker) gets 3 + 2 + 1 batches of 4 with "drop" (50, 40, 30 rows over 4 units of
    16), 4 + 3 + 2 with "pad"; with "keep" every row exactly once."""
    import torch

    shapes = {(4, 8, 8): 50, (4, 8, 12): 40, (4, 12, 8): 30}  # the latents of 32x32, 32x48, 48x32
    for remainder, per_unit in (("drop", 6), ("pad", 9), ("keep", None)):
        got = []
        for rank in range(2):
            ds = ArchiveDataset(
                bucketed,
                rank=rank,
                world_size=2,
                batch_size=4,
                remainder=remainder,
                num_workers=2,
                columns=[],
            )
            batches = list(DataLoader(ds, batch_size=None, num_workers=2))
            assert len(batches) == len(ds)
            assert all(len({tuple(t.shape) for t in torch.unbind(b["latent"])}) == 1 for b in batches)
            got.append(batches)
        keys = [k for batches in got for b in batches for k in b["key"]]
        if per_unit is not None:
            assert [len(b) for b in got] == [2 * per_unit, 2 * per_unit]  # equal: DDP never waits
            assert all(len(b["key"]) == 4 for batches in got for b in batches)
        if remainder == "drop":
            assert len(keys) == len(set(keys))
            seen = [tuple(b["latent"].shape[1:]) for batches in got for b in batches]
            assert {s: seen.count(s) for s in shapes} == {s: 4 * (n // 16) for s, n in shapes.items()}
        else:  # every row at least once; "keep": exactly once
            assert len(set(keys)) == 120 and (remainder == "pad" or len(keys) == 120)


@pytest.mark.timeout(240)
def test_ddp_ranks_get_equal_batches_of_a_bucketed_archive(bucketed, tmp_path):
    ranks = _ddp(bucketed, tmp_path, 4)
    for epoch in range(2):
        batches = [r["epochs"][epoch] for r in ranks]
        assert [len(b) for b in batches] == [12, 12]  # 2 units of 3 + 2 + 1 batches a rank
        keys = [k for b in batches for batch in b for k in batch["keys"]]
        assert len(keys) == len(set(keys)) == 96
        assert sorted(batch["shape"] for b in batches for batch in b) == sorted(
            [[4, 8, 8]] * 12 + [[4, 8, 12]] * 8 + [[4, 12, 8]] * 4
        )
    assert all(r["len"] == 12 and r["sum"] == 24 for r in ranks)
    for r in ranks:
        assert r["resumed"] == r["epochs"][1][5:]


def test_dataset_decodes_samples_as_the_decoder_does(archive, digits_ckpt):
    expected = direct_reconstructions(archive, digits_ckpt)
    items = list(ArchiveDataset(archive, checkpoint=digits_ckpt, decode=True, batch_rows=100))
    assert len(items) == len(expected)
    for item in items:
        assert item["sample"].dtype == np.uint8 and item["sample"].shape == (8, 8)
        assert np.array_equal(item["sample"], expected[item["key"]])
    # three ranks cut the files mid-batch: only each rank's rows go through the decoder
    seen = {}
    for rank in range(3):
        ds = ArchiveDataset(
            archive,
            checkpoint=digits_ckpt,
            decode=True,
            batch_rows=100,
            rank=rank,
            world_size=3,
            remainder="keep",
        )
        seen.update((i["key"], i["sample"]) for i in ds)
    assert len(seen) == len(expected) and all(np.array_equal(v, expected[k]) for k, v in seen.items())


def test_dataset_refuses_what_it_cannot_do(archive, tmp_path):
    with pytest.raises(ConfigError, match="needs the checkpoint"):
        ArchiveDataset(archive, decode=True)
    with pytest.raises(InputError, match="no archive files"):
        ArchiveDataset(str(tmp_path))
    with pytest.raises(InputError, match=r"no such passthrough columns \['caption'\]"):
        next(iter(ArchiveDataset(archive, columns=["caption"])))


def test_ray_data_reads_dequantizes_and_decodes(archive, reference, digits_ckpt):
    expected = direct_reconstructions(archive, digits_ckpt)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        ds = read_archive(archive)
        latents = {r["key"]: r for r in with_latents(ds, archive).take_all()}
        samples = {r["key"]: r for r in with_samples(ds, archive, digits_ckpt).take_all()}
    finally:
        ray.shutdown()
    assert set(latents) == set(reference) == set(samples)
    for key, (latent, label) in reference.items():
        assert np.array_equal(latents[key]["latent"], latent) and latents[key]["label"] == label
        assert np.array_equal(samples[key]["sample"], expected[key])
        assert samples[key]["label"] == label
        assert not any(c.startswith("vz_") for c in samples[key])


def test_inspect_reports_what_the_files_hold(archive, capsys, digits):
    import json

    from jobs import inspect
    from jobs._cli import run_main

    assert run_main(inspect.main, [archive, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    files = sorted(f for f in os.listdir(archive) if f.endswith(".vz.parquet"))
    assert d["files"] == len(files) == 4 and d["rows"] == len(digits[0])
    assert d["bytes"] == sum(os.path.getsize(os.path.join(archive, f)) for f in files)
    assert d["manifest"] == "complete" and d["failed_shards"] == 0
    assert d["sample_shapes"] == {"8x8 uint8": len(digits[0])}
    assert d["passthrough"] == {"label": "int64"}
    assert d["codec"]["framing"] == "column" and d["format_versions"] == [2]
    assert 0 < sum(d["column_bytes"].values()) < d["bytes"]
    assert run_main(inspect.main, [archive]) == 0
    text = capsys.readouterr().out
    assert f"{len(digits[0]):,} rows" in text and "vz_codes" in text


def test_inspect_of_a_folder_without_archive_is_one_clear_error(tmp_path, capsys):
    from jobs import inspect
    from jobs._cli import run_main

    assert run_main(inspect.main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no archive files (*.vz.parquet) found" in err


def test_the_readme_duckdb_example_runs_on_an_archive(archive, digits):
    import re
    from pathlib import Path

    import duckdb

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (sql,) = re.findall(r"```sql\n-- duckdb\n(.*?)```", readme, flags=re.S)
    assert "runs/digits-archive" in sql
    rows = duckdb.connect().execute(sql.replace("runs/digits-archive", archive)).fetchall()
    assert [(label, n) for label, n, _ in rows] == [(d, int((digits[1] == d).sum())) for d in range(10)]
    assert all(code_bytes > 0 for *_, code_bytes in rows)


@pytest.fixture
def tampered(archive, tmp_path):
    """A copy of the archive with one footer's quantizer step changed, its footer checksum made
    consistent (as one who knows the format would): only the manifest's sha256 tells."""
    import shutil

    from tests.helpers import change_a_step_digit

    arch = shutil.copytree(archive, tmp_path / "arch")
    change_a_step_digit(arch / "digits-00001.vz.parquet", keep_footer_checksum_valid=True)
    return arch


def test_dataset_refuses_a_changed_file_before_handing_out_its_rows(tampered, reference):
    items = []
    with pytest.raises(InputError, match=r"digits-00001\.vz\.parquet: sha256 does not match"):
        for item in ArchiveDataset(str(tampered)):
            items.append(item)
    assert [i["key"] for i in items] == list(reference)[:512]  # the first file's, all right
    for item in items:
        assert np.array_equal(item["latent"], reference[item["key"]][0])


def test_dataset_refuses_a_file_the_manifest_lists_but_is_gone(archive, tmp_path):
    import shutil

    arch = shutil.copytree(archive, tmp_path / "arch")
    (arch / "digits-00002.vz.parquet").unlink()
    with pytest.raises(InputError, match=r"digits-00002\.vz\.parquet: listed in the archive's manifest but"):
        list(ArchiveDataset(str(arch)))


def test_ray_data_refuses_changed_and_missing_files(tampered, tmp_path):
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        with pytest.raises(Exception, match=r"digits-00001\.vz\.parquet: sha256 does not match"):
            with_latents(read_archive(str(tampered)), str(tampered)).take_all()
        (tampered / "digits-00001.vz.parquet").unlink()  # deleted after the manifest was written
        with pytest.raises(InputError, match=r"digits-00001\.vz\.parquet: listed in the archive's manifest"):
            read_archive(str(tampered))
    finally:
        ray.shutdown()


def test_an_unfinished_iterator_leaves_no_noise_at_exit(archive):
    import subprocess
    import sys

    code = (
        "from pipeline.loaders.torch_data import ArchiveDataset\n"
        f"it = iter(ArchiveDataset({archive!r}, shuffle=True, batch_size=4))\n"
        "print(len(next(it)['key']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "4"
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
