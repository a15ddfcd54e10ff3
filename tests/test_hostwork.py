"""What the GPU path changes, checked where it runs on a CPU too: host work on several
threads, codes quantized by torch, the model at another precision, the pool's shape."""

import io
import os
import re
import subprocess
import sys
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.codec.quantize import QuantizerParams, dequantize, quantize
from pipeline.codec.quantize_torch import dequantize_tensor, quantize_tensor
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.hostpool import POOLS, Blobs, host_map, host_submit_blobs
from pipeline.core.value_range import ValueRange
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.readers.parquet import _blobs
from pipeline.data.samples import model_groups, to_model
from pipeline.model.nets import ConvConfig, MLPConfig
from pipeline.model.precision import autocast, pick_dtype
from pipeline.run.runner import PoolConfig, pool_shape
from pipeline.workers.encoder import model_input
from tests.helpers import decode, direct_reconstructions, encode


def _square(x):
    return x * x


def _bad_at_7_and_60(x):
    if x in (7, 60):
        raise ValueError(f"bad {x}")
    return np.full((2, 3), x, dtype=np.uint8)


def _blob(item):
    blob, row = item
    if bytes(blob) == b"bad":
        raise InputError("blobs", "bad blob", row=row)
    return np.frombuffer(bytes(blob), dtype=np.uint8).copy()


@pytest.fixture
def fresh_arena():
    """An arena of its own for a test, its segments removed afterwards."""
    from pipeline.core.hostpool import _Arena

    arena = _Arena()
    yield arena
    arena.clear()  # and what the test's arrays still hold, when they go


def _segments():
    """Shared-memory segments on this machine, less those the arena keeps free for reuse: what
    is lent or leaked."""
    from pipeline.core.hostpool import _ARENA

    on_disk = (
        {f for f in os.listdir("/dev/shm") if f.startswith("psm_")} if os.path.isdir("/dev/shm") else set()
    )
    return on_disk - _ARENA.free()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", POOLS)
def test_host_map_keeps_order_and_raises_the_earliest_error(pool):
    before = _segments()
    assert host_map(_square, list(range(103)), 4, pool) == [x * x for x in range(103)]
    got = host_map(_bad_at_7_and_60, [x for x in range(100) if x not in (7, 60)], 3, pool)
    assert [int(a[0, 0]) for a in got] == [x for x in range(100) if x not in (7, 60)]
    with pytest.raises(ValueError, match="bad 7"):
        host_map(_bad_at_7_and_60, list(range(100)), 3, pool)
    assert _segments() == before  # every shared-memory segment is gone again


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", POOLS)
def test_blobs_reach_the_workers_whole_and_in_order(pool):
    before = _segments()
    values = [bytes([i]) * (i % 7) for i in range(1, 40)]  # lengths 0..6
    offsets = np.cumsum([0] + [len(v) for v in values])
    blobs = Blobs(memoryview(b"".join(values)), offsets)
    for workers in (1, 3):
        got = host_submit_blobs(_blob, blobs, 100, workers, pool).result()
        assert [bytes(a) for a in got] == values
    values[20] = values[30] = b"bad"
    offsets = np.cumsum([0] + [len(v) for v in values])
    with pytest.raises(InputError, match="blobs row 120: bad blob"):
        host_submit_blobs(_blob, Blobs(memoryview(b"".join(values)), offsets), 100, 3, pool).result()
    assert _segments() == before


@pytest.mark.timeout(120)
def test_a_reader_stopped_early_leaves_nothing_behind(tmp_path):
    images, _ = _sources(tmp_path)
    before = _segments()
    opts = ReadOptions(batch_rows=4, host_workers=2, host_pool="processes")
    batches = iter_batches(str(tmp_path / "t.parquet"), opts)
    assert len(next(batches).samples) == 4
    batches.close()  # two batches were in flight: discarded, their segments freed
    deadline = time.monotonic() + 10
    while _segments() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _segments() == before
    from pipeline.core.hostpool import _ARENA

    assert not _ARENA.free()  # a reader that is done keeps no segment for later either


def _png(rng, h, w):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _sources(tmp_path):
    rng = np.random.default_rng(0)
    images = [_png(rng, 16 + i % 5, 20) for i in range(23)]
    images[17] = b"not an image"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, data in enumerate(images):
        (folder / f"{i:03d}.png").write_bytes(data)
    pq.write_table(pa.table({"image": pa.array(images, pa.binary())}), tmp_path / "t.parquet")
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        for i, data in enumerate(images):
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return images, folder


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("fmt", ["folder", "parquet", "webdataset"])
def test_readers_give_the_same_rows_and_errors_on_several_workers(tmp_path, fmt, pool):
    images, folder = _sources(tmp_path)
    files = tuple(str(folder / f"{i:03d}.png") for i in range(len(images)))
    source, members = {
        "folder": (str(folder), files[:17]),
        "parquet": (str(tmp_path / "t.parquet"), ()),
        "webdataset": (str(tmp_path / "t.tar"), ()),
    }[fmt]

    def read(workers, members=members):
        opts = ReadOptions(batch_rows=8, host_workers=workers, host_pool=pool)
        return [s for b in iter_batches(source, opts, members) for s in b.samples]

    if fmt == "folder":  # the good images, then the bad one alone
        one, four = read(1), read(4)
        assert len(one) == 17 and all(np.array_equal(a, b) for a, b in zip(one, four, strict=True))
        with pytest.raises(InputError, match="017.png"):
            read(4, files[16:])
        return
    with pytest.raises(InputError) as serial:
        read(1)
    with pytest.raises(InputError) as parallel:
        read(4)
    assert str(parallel.value) == str(serial.value) and "row 17" in str(parallel.value)


def test_torch_quantizer_gives_the_numpy_codes_and_latents():
    rng = np.random.default_rng(1)
    for levels in (200, 3000):  # uint8 and uint16 codes
        params = QuantizerParams(
            "loss", (-2.0, -1.0, 0.5), (0.013, 0.02, 0.7), (levels, levels, 5), (True, False, True)
        )
        x = rng.normal(0, 1.5, (9, 3, 50)).astype(np.float32)
        x[0, 0, :5] = (np.arange(5) + 0.5) * 0.013 - 2.0  # exact halves: round half to even
        want, want_clipped = quantize(x, params)
        got, clipped = quantize_tensor(torch.from_numpy(x), params)
        assert got.dtype == want.dtype and np.array_equal(got, want) and clipped == want_clipped > 0
        back = dequantize_tensor(torch.from_numpy(want.astype(np.int32)).reshape(9, 2, 5, 10), params)
        assert np.array_equal(back.numpy().reshape(9, 3, 50), dequantize(want, params))


def test_precision_choice():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="precision must be one of"):
        pick_dtype("fp8", torch.device("cpu"))
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("local_ray")
def test_a_bf16_job_on_host_workers_decodes_as_its_decoder_does(tmp_path, photos, photos_ckpt, capsys):
    arch, rec = tmp_path / "arch", tmp_path / "rec"
    extra = ("--precision", "bf16", "--host-workers", "2")
    assert encode(photos / "heldout", photos_ckpt, arch, *extra) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"pool: \d CPU actor\(s\) of 1 CPU\(s\) each; model at bf16 on cpu, 2 host worker\(s\) each", out
    )
    assert decode(arch, photos_ckpt, rec, "--precision", "fp32", "--format", "parquet") == 0
    direct = direct_reconstructions(str(arch), photos_ckpt)  # float32, as this decode ran
    table = pq.read_table(next(rec.glob("*.parquet")))
    for key, img in zip(table["key"].to_pylist(), table["image"].to_pylist(), strict=True):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(img["bytes"]))), direct[key])


@pytest.mark.parametrize(
    "config, resources, want",
    [
        (PoolConfig(), {"CPU": 16, "GPU": 1}, (1, 15, 1.0)),  # the node's CPUs for host work
        (PoolConfig(), {"CPU": 16, "GPU": 2}, (2, 7, 1.0)),
        (PoolConfig(actors_per_gpu=4), {"CPU": 16, "GPU": 1}, (4, 3, 0.25)),
        (PoolConfig(), {"CPU": 1, "GPU": 1}, (1, 0, 1.0)),
        (PoolConfig(use_gpus=False, threads_per_actor=2), {"CPU": 8, "GPU": 1}, (4, 2, 0)),
    ],
)
def test_pool_shape_fits_the_node(config, resources, want):
    shape = pool_shape(config, resources)
    assert (shape.actors, shape.num_cpus, shape.num_gpus) == want


def test_a_gpu_actor_gets_the_cpus_of_its_own_node():
    nodes = [{"CPU": 64}, {"CPU": 8, "GPU": 1}, {"CPU": 16, "GPU": 2}]  # a CPU node, two GPU nodes
    shape = pool_shape(PoolConfig(), {"CPU": 88, "GPU": 3}, nodes)
    assert (shape.actors, shape.num_cpus, shape.num_gpus) == (3, 7, 1.0)


def test_more_gpu_actors_than_the_shares_is_one_clear_error():
    with pytest.raises(ConfigError, match="3 GPU actors asked for, the cluster has 1 GPUs"):
        pool_shape(PoolConfig(actors=3, actors_per_gpu=2), {"CPU": 16, "GPU": 1})


def test_blobs_of_a_slice_of_binary_or_image_structs():
    values = [bytes([i]) * (i + 1) for i in range(10)]
    binary = pa.array(values, pa.binary()).slice(3, 5)
    struct = pa.array([{"bytes": v, "path": f"{i}.png"} for i, v in enumerate(values)]).slice(3, 5)
    for column in (binary, struct, pa.array(values, pa.large_binary()).slice(3, 5)):
        blobs = _blobs(column)
        assert blobs is not None and [bytes(blobs[i]) for i in range(len(blobs))] == values[3:8]
    path_only = pa.array([{"bytes": None, "path": "a.png"}, {"bytes": b"x", "path": None}])
    assert _blobs(path_only) is None and _blobs(pa.array([b"x", None])) is None


def to_model_batch(samples, config, locate, value_range=None):
    """``model_groups``' arrays, one per sample, in batch order."""
    groups, layouts = model_groups(samples, config, locate, value_range)
    arrays = [None] * len(samples)
    for g in groups:
        for j, i in enumerate(g.rows):
            arrays[i] = g.x[j]
    return arrays, layouts


def test_a_batch_converts_as_each_sample_does():
    rng = np.random.default_rng(3)
    conv3, conv1 = ConvConfig(in_channels=3), ConvConfig(in_channels=1)
    wide = ValueRange(-10.0, 70000.0)
    cases = [
        ([rng.integers(0, 256, (8, 6, 3), dtype=np.uint8) for _ in range(5)], conv3, None),
        ([rng.integers(0, 256, (8, 6), dtype=np.uint8) for _ in range(3)], conv1, None),
        ([rng.integers(0, 65536, (4, 4), dtype=np.uint16) for _ in range(3)], conv1, wide),
        ([rng.integers(0, 256, (16,), dtype=np.uint8) for _ in range(4)], MLPConfig(input_dim=16), None),
        ([rng.random((4, 4)).astype(np.float32) for _ in range(3)], conv1, None),
        (  # two shapes and a float among uint8: grouped, order kept
            [rng.integers(0, 256, s, dtype=np.uint8) for s in ((4, 4), (6, 4), (4, 4))]
            + [rng.random((4, 4)).astype(np.float32)],
            conv1,
            None,
        ),
    ]
    for samples, config, vr in cases:
        arrays, layouts = to_model_batch(samples, config, lambda i: ("x", i), vr)
        for i, s in enumerate(samples):
            want, layout = to_model(s, config, "x", i, vr)
            assert arrays[i].dtype == np.float32 and np.array_equal(arrays[i], want) and layouts[i] == layout
        # the same arrays made on the device from the samples as read (a GPU worker's way)
        groups, deferred_layouts = model_groups(samples, config, lambda i: ("x", i), vr, defer=True)
        assert deferred_layouts == layouts and sorted(i for g in groups for i in g.rows) == list(
            range(len(samples))
        )
        for g in groups:
            x = model_input(g, torch.device("cpu")).numpy()
            assert x.dtype == np.float32 and x.flags.c_contiguous
            assert all(np.array_equal(x[j], arrays[i]) for j, i in enumerate(g.rows))
        assert any(g.scale is not None for g in groups) == (samples[0].dtype != np.float32)
    bad = [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint16), np.full((4, 4), 300, np.uint16)]
    with pytest.raises(InputError, match="s.parquet row 12: uint16 values 300..300"):
        to_model_batch(bad, conv1, lambda i: ("s.parquet", 10 + i))
    nan = np.full((4, 4), np.nan, np.float32)
    bad = [np.zeros((4, 4), np.uint16), nan, np.full((4, 4), 300, np.uint16)]
    with pytest.raises(InputError, match="s.parquet row 11: sample holds NaN"):
        to_model_batch(bad, conv1, lambda i: ("s.parquet", 10 + i))  # not row 12, of the first group
    with pytest.raises(InputError, match="s.parquet row 10: image of shape"):
        to_model_batch([np.zeros((4, 4, 2), np.uint8)] * 2, conv3, lambda i: ("s.parquet", 10 + i))


_KILLED_PARENT = """
import os
from pipeline.core.hostpool import host_map


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


if __name__ == "__main__":
    host_map(abs, list(range(-8, 8)), 2, "processes")  # the pool is up
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == os.getpid()]
    print(" ".join(map(str, kids)), flush=True)
    os.kill(os.getpid(), 9)  # as Ray kills an actor: no shutdown, no atexit
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc")
def test_host_worker_processes_end_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        env={**os.environ, "PYTHONPATH": root},
    )
    kids = [int(p) for p in done.stdout.split()]
    assert done.returncode == -9 and len(kids) >= 2
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{k}") and "Z" not in _state(k) for k in kids):
        assert time.monotonic() < deadline, "host worker processes outlived their parent"
        time.sleep(0.2)


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_codes_quantized_beside_the_model_are_the_writers_codes(photos, photos_ckpt, tmp_path):
    """A GPU worker quantizes on its device and a CPU worker in its writer thread: the same
    rows give the same payloads and checksums either way (run here on the CPU)."""
    from pipeline.codec.codec import Codec, CodecConfig
    from pipeline.codec.quantize import QuantizerConfig
    from pipeline.ledger.job import JobParams
    from pipeline.ledger.plan import plan_shards
    from pipeline.workers.encode import EncodeSpec, EncodeWorker, code_rows

    worker = EncodeWorker(EncodeSpec(photos_ckpt, str(tmp_path / "out"), device="cpu", threads=1))
    shard = plan_shards(str(photos / "heldout"))[0]
    q, c = worker.calibrate([shard], 256, QuantizerConfig(), CodecConfig())
    job, codec = JobParams(q, c, "fp"), Codec(c)
    beside = [code_rows(e, job, codec) for e in worker.encoder.encoded(shard, q)]
    writer = [code_rows(e, job, codec) for e in worker.encoder.encoded(shard)]
    assert all(
        b[0].codes == w[0].codes and b[0].crc32 == w[0].crc32 for b, w in zip(beside, writer, strict=True)
    )
    worker.encoder.defer_scaling = True  # as on a GPU: uint8 pixels made model arrays there
    encs = list(worker.encoder.encoded(shard, q))
    assert encs[0].inputs[0].dtype == np.uint8  # the pixels as read went to the model's device
    assert [code_rows(e, job, codec)[0].codes for e in encs] == [b[0].codes for b in beside]
    assert [b[1] for b in beside] == [w[1] for w in writer] and len(beside) > 0


def _die(x):
    if x == 5:
        os._exit(3)  # as the kernel's out-of-memory killer would end it
    return np.zeros(4, np.uint8)


@pytest.mark.timeout(120)
def test_a_host_worker_that_dies_fails_its_batch_with_a_clear_error_and_the_next_gets_a_new_pool():
    from pipeline.core.hostpool import HostWorkerDied

    with pytest.raises(HostWorkerDied, match="host worker process died.*--host-pool threads"):
        host_map(_die, list(range(10)), 2, "processes")
    assert [a.size for a in host_map(_die, [1, 2, 3, 4], 2, "processes")] == [4, 4, 4, 4]


def _no_room(*_args):
    raise OSError(28, "No space left on device")


@pytest.mark.timeout(120)
def test_a_batch_shared_memory_has_no_room_for_goes_through_the_pipe_with_a_warning(
    monkeypatch, caplog, fresh_arena
):
    from pipeline.core import hostpool

    monkeypatch.setattr(hostpool, "_WARNED", [])
    monkeypatch.setattr(hostpool, "_ARENA", fresh_arena)  # no segment kept from before
    monkeypatch.setattr(os, "posix_fallocate", _no_room)  # this process: its blob segments
    before = _segments()
    values = [bytes([i]) * 50 for i in range(1, 40)]
    blobs = Blobs(memoryview(b"".join(values)), np.cumsum([0] + [len(v) for v in values]))
    with caplog.at_level("WARNING", logger="pipeline.core.hostpool"):
        got = host_submit_blobs(_blob, blobs, 100, 3, "processes").result()
        host_submit_blobs(_blob, blobs, 100, 3, "processes").result()
    assert [bytes(a) for a in got] == values
    said = [r.getMessage() for r in caplog.records if "shared memory" in r.getMessage()]
    assert len(said) == 1 and "--shm-size" in said[0] and "--host-pool threads" in said[0]
    assert _segments() == before


def test_a_host_workers_pixels_go_back_through_the_pipe_when_shared_memory_has_no_room(monkeypatch, caplog):
    from pipeline.core import hostpool

    monkeypatch.setattr(hostpool, "_WARNED", [])
    monkeypatch.setattr(os, "posix_fallocate", _no_room)  # as in a child with a full /dev/shm
    before = _segments()
    part = hostpool._run_packed(_bad_at_7_and_60, [1, 2, 3])
    assert not isinstance(part, hostpool._Stacked) and _segments() == before
    with caplog.at_level("WARNING", logger="pipeline.core.hostpool"):
        got = hostpool._unpacked(part)
    assert [int(a[0, 0]) for a in got] == [1, 2, 3]
    assert any("through the host workers' pipes" in r.getMessage() for r in caplog.records)


SMALL_SHM = """
import io, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from PIL import Image
from pipeline.data.readers import ReadOptions, iter_batches

if __name__ == "__main__":
    imgs = np.random.default_rng(0).integers(0, 256, (64, 96, 96, 3), dtype=np.uint8)
    blobs = []
    for a in imgs:
        b = io.BytesIO()
        Image.fromarray(a).save(b, format="PNG")
        blobs.append(b.getvalue())
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), sys.argv[1])
    opts = ReadOptions(batch_rows=32, host_workers=2, host_pool="processes")
    got = [s for b in iter_batches(sys.argv[1], opts) for s in b.samples]
    print("rows", len(got), "equal", all(np.array_equal(g, a) for g, a in zip(got, imgs, strict=True)))
"""


@pytest.mark.timeout(180)
def test_a_full_dev_shm_slows_the_host_workers_down_and_kills_nothing(tmp_path):
    """A real 1 MiB /dev/shm (a private mount, where this machine allows one): each batch's
    0.9 MiB of PNG bytes and 0.8 MiB of pixels cannot have their pages; without the
    reservation the reader died of SIGBUS (exit 135)."""
    mount = "mount -t tmpfs -o size=1M tmpfs /dev/shm"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare -m needs root or user namespaces)")
    (tmp_path / "run.py").write_text(SMALL_SHM)
    cmd = f'{mount} && exec "{sys.executable}" run.py shard.parquet'
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rows 64 equal True" in out.stdout
    assert out.stderr.count("goes through the host workers' pipes") == 1


def test_stack_rows_hands_back_the_array_its_rows_came_from_and_copies_anything_else():
    from pipeline.data.grid import stack_rows

    base = np.arange(24, dtype=np.float32).reshape(4, 2, 3).copy()
    assert stack_rows(list(base)) is base  # its rows, in order: no copy
    for rows in (
        [base[1], base[0], base[2], base[3]],  # out of order
        list(base[:3]),  # not all of it
        [base[0], base[1], base[2], base[3].copy()],  # one from elsewhere
        list(base[:, :, :2]),  # not contiguous
        list(np.arange(24.0).reshape(4, 2, 3)),  # rows of a view: their base is the 1-D array
        [np.ones((2, 3)), np.zeros((2, 3))],
    ):
        got = stack_rows(rows)
        assert got is not base and np.array_equal(got, np.stack(rows))


def _pixels(item):
    blob, row = item
    return np.full((int(bytes(blob)), 3), row % 256, dtype=np.uint8)  # a blob says its size


@pytest.mark.timeout(120)
def test_batches_reuse_their_shared_memory_and_outgrow_it_safely(monkeypatch, fresh_arena):
    from pipeline.core import hostpool

    monkeypatch.setattr(hostpool, "_ARENA", fresh_arena)
    monkeypatch.setattr(hostpool, "_ROW_BYTES", [0])  # no guess yet at the pixels' size
    before = _segments()

    def batch(size, first):
        values = [str(size).encode()] * 40
        blobs = Blobs(memoryview(b"".join(values)), np.cumsum([0] + [len(v) for v in values]))
        got = host_submit_blobs(_pixels, blobs, first, 2, "processes").result()
        assert [a.shape for a in got] == [(size, 3)] * 40
        assert [int(a[0, 0]) for a in got] == [(first + i) % 256 for i in range(40)]
        return got

    batch(100, 0)  # the pixels come back in segments of their own; next time in lent ones
    batch(100, 40)
    kept = hostpool._ARENA.free()
    assert len(kept) == 3  # the blobs' segment and one per run, back in the arena
    held = batch(100, 80)  # its pixels are views of the two runs' lent segments: held
    assert len(hostpool._ARENA.free() & kept) == 1  # only the blobs' is back
    del held
    assert hostpool._ARENA.free() == kept  # back when they went; used again, nothing new made
    batch(5000, 120)  # pixels larger than the lent segments: a new segment each, right values
    batch(10, 160)
    assert _segments() == before  # nothing lent or left behind


def test_the_arena_keeps_what_was_lent_at_once_at_most():
    from pipeline.core.hostpool import _Arena

    arena = _Arena()
    a, b = arena.take(1 << 20), arena.take(1 << 20)
    assert a is not None and b is not None and a.name != b.name
    arena.give(a)
    assert arena.take(900_000) is a  # the free one that fits
    arena.give(a)
    arena.give(b)
    assert len(arena.free()) == 2
    c = arena.take(3 << 20)  # too large for either: a new one, and the peak grows
    assert c is not None and c.name not in {a.name, b.name}
    arena.give(c)
    small = arena.take(64)
    assert small is not None and small.size < (1 << 20)  # no 1 MiB segment for 64 bytes
    arena.give(small)
    arena.KEEP = 2
    d = arena.take(10)
    assert d is not None
    arena.give(d)
    assert len(arena.free()) == 2  # the largest went
    e = arena.take(10)
    assert e is not None and arena.hold(e.name) is e  # a batch's arrays view it too
    arena.give(e)  # the batch is settled: the arrays still hold it
    assert e.name not in arena.free()
    arena.give(e)  # the arrays are gone
    assert e.name in arena.free()
    f = arena.take(10)
    assert f is not None
    arena.clear()  # the reader is done: the free ones go now, a lent one when it comes back
    assert not arena.free() and os.path.exists(f"/dev/shm/{f.name}")
    arena.give(f)
    assert not arena.free() and not os.path.exists(f"/dev/shm/{f.name}")


def test_a_host_worker_maps_a_name_again_when_it_names_another_segment():
    from multiprocessing.shared_memory import SharedMemory

    from pipeline.core import hostpool

    first = SharedMemory(create=True, size=4096)
    name = first.name
    first.buf[:3] = b"old"
    assert bytes(hostpool._attach(name).buf[:3]) == b"old"
    assert bytes(hostpool._attach(name).buf[:3]) == b"old" and name in hostpool._ATTACHED  # kept
    first.close()
    first.unlink()
    again = SharedMemory(name=name, create=True, size=4096)  # the parent made that name anew
    again.buf[:3] = b"new"
    assert bytes(hostpool._attach(name).buf[:3]) == b"new"
    again.close()
    again.unlink()  # the parent removed it: the worker lets go of it at its next task
    other = SharedMemory(create=True, size=4096)
    hostpool._attach(other.name)
    assert name not in hostpool._ATTACHED
    hostpool._ATTACHED.pop(other.name)[0].close()
    other.close()
    other.unlink()
