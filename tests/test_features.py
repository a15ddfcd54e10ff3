"""jobs.features: posterior means as a Parquet feature table, keys and labels beside them."""

import re

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs import features as features_job
from jobs._cli import run_main
from pipeline.model.checkpoint import load_checkpoint

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_ray")]


def test_feature_table_holds_the_encoder_means_with_keys_and_labels(
    tmp_path, digits_dir, digits_ckpt, digits, capsys
):
    out = tmp_path / "feat"
    args = ["--input", digits_dir, "--checkpoint", digits_ckpt, "--output", str(out), "--logvar"]
    assert run_main(features_job.main, args) == 0
    # the summary reports the model's share (its size depends on the machine's load: no bound)
    assert re.search(r"workers spent \d+% of their shard time in the model", capsys.readouterr().out)
    files = sorted(out.glob("*.features.parquet"))
    assert [f.name for f in files] == [f"digits-{i:05d}.features.parquet" for i in range(4)]
    table = pq.read_table(files)
    assert table.num_rows == len(digits[0])
    assert table.column_names == ["key", "mean", "logvar", "latent_shape", "label"]
    assert table["key"][0].as_py() == "digits-00000:0"
    ckpt = load_checkpoint(digits_ckpt)
    with torch.inference_mode():
        post = ckpt.model.encode(torch.from_numpy(digits[0].reshape(len(digits[0]), -1) / 255.0).float())
    means = np.stack(table["mean"].to_numpy(zero_copy_only=False))
    assert means.dtype == np.float32 and means.shape == (len(digits[0]), ckpt.config.latent_dim)
    np.testing.assert_allclose(means, post.mean.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.stack(table["logvar"].to_numpy(zero_copy_only=False)), post.logvar.numpy(), rtol=0, atol=1e-5
    )
    assert table["label"].to_pylist() == digits[1].tolist()
    [(n,)] = (
        duckdb.connect()
        .execute(f"SELECT count(*) FROM read_parquet('{out}/*.features.parquet') WHERE label = 3")
        .fetchall()
    )
    assert n == int((digits[1] == 3).sum())
    # a re-run finds every shard complete and rewrites nothing
    before = {f: f.stat().st_mtime_ns for f in files}
    assert run_main(features_job.main, args) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == before
