"""Compare restored samples with the originals, in the data's own units:
``python -m jobs.verify --original DATA --restored DIR [--archive ARCHIVE]``.

Reads every decode format (npy, parquet, images, webdataset: whichever each shard was written
as), matches rows by key, checks that every original key was restored exactly once, and
prints the mean per-sample PSNR against the data's true peak, the RMSE and the largest error
in the data's units, and (with ``--archive``) the archive's size against the input's own bytes
and against the same values stored as float16. ``--baseline`` (with ``--archive``) also
compresses the first ``--baseline-rows`` samples with the classic codecs (PNG, and JPEG and
WebP at the lowest quality that reaches vaezip's PSNR on them, per sample and tiled; zstd and
float16 + zstd for arrays) and prints their bytes beside vaezip's.

``--checkpoint`` (with ``--archive``; the checkpoint the archive was written with) also runs
the originals through the model without quantizing and prints what quantizing cost: the PSNR
drop ``10 log10(SSE(restored) / SSE(unquantized))`` over all rows, the figure
``jobs.encode --max-loss-db`` bounds and reports from its calibration rows.

The peak is the value range the archive recorded (``--value-range`` of train or encode): 255
for 8-bit pixels, 65535 for a 16-bit scan, HI - LO for a raster in metres. Without
``--archive`` it is the dtype's range for integers and the originals' extent for floats.
"""

from __future__ import annotations

import io
import json
import posixpath
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow.parquet as pq
import torch

from jobs._cli import Parser, add_sample_shape, run_main
from pipeline.codec.format import archive_files, read_meta
from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.names import legacy_sample_key, sample_keys
from pipeline.core.value_range import ValueRange
from pipeline.data.archive import LatentBatch, SampleDecoder, iter_latents
from pipeline.data.baseline import baselines, psnr
from pipeline.data.rd_rows import hyper_of
from pipeline.data.readers import ReadOptions, iter_batches
from pipeline.data.readers.base import Batch, Limits
from pipeline.data.readers.images import decode_image
from pipeline.data.readers.parquet import iter_parquet
from pipeline.data.readers.webdataset import iter_webdataset
from pipeline.data.samples import INTS, default_range, dtype_range, to_model
from pipeline.data.tiles import assemble, context_windows, split_tile_key, tile_key, windows
from pipeline.ledger.integrity import check_archive
from pipeline.ledger.plan import plan_shards
from pipeline.ledger.shard import Shard
from pipeline.model.checkpoint import Checkpoint, load_checkpoint
from pipeline.model.reach import tile_reach

Restored = dict[str, np.ndarray]  # key -> restored sample


def _keyed(batches: Iterator[Batch]) -> Restored:
    return {k: x for b in batches for k, x in zip(b.ids or b.columns["key"], b.samples, strict=True)}


def _from_npy(stem: str) -> Restored:
    arrays = np.load(io.BytesIO(storage.read_bytes(stem + ".npy")), allow_pickle=False)
    keys = pq.read_table(io.BytesIO(storage.read_bytes(stem + ".keys.parquet")), columns=["key"])
    return dict(zip(keys["key"].to_pylist(), arrays, strict=True))


def _from_parquet(stem: str) -> Restored:  # the key column beside the image (or data) column
    return _keyed(iter_parquet(stem + ".parquet", 256, max_pixels=1 << 62))


def _from_images(stem: str) -> Restored:
    index = pq.read_table(io.BytesIO(storage.read_bytes(stem + ".index.parquet")), columns=["key", "file"])
    folder = posixpath.dirname(stem)
    out: Restored = {}
    for key, f in zip(index["key"].to_pylist(), index["file"].to_pylist(), strict=True):
        data = storage.read_bytes(storage.join(folder, f))
        out[key] = (
            np.load(io.BytesIO(data), allow_pickle=False)
            if f.endswith(".npy")
            else decode_image(data, f, None, 1 << 62)
        )
    return out


def _from_tar(stem: str) -> Restored:  # the reader takes each sample's vzkey.txt as its key
    return _keyed(iter_webdataset(stem + ".tar", 256, limits=Limits(max_pixels=1 << 62)))


READERS = {".npy": _from_npy, ".parquet": _from_parquet, ".index.parquet": _from_images, ".tar": _from_tar}


def read_restored(folder: str, shard: Shard) -> Restored:
    """The decode of ``shard`` in ``folder``, in whichever format it was written."""
    stem = storage.join(folder, shard.name)
    for suffix in (".index.parquet", ".npy", ".parquet", ".tar"):  # an index before plain Parquet
        if storage.exists(stem + suffix):
            return READERS[suffix](stem)
    raise InputError(stem, "restored shard is missing (no .npy, .parquet, .index.parquet or .tar)")


@dataclass
class Errors:
    """Running error sums in the data's units."""

    psnrs: list[float]
    squared: float = 0.0
    values: int = 0
    max_error: float = 0.0

    def add(self, x: np.ndarray, y: np.ndarray, peak: float) -> None:
        d = x.astype(np.float64) - y.astype(np.float64)
        self.psnrs.append(psnr(x, y, peak))
        self.squared += float(np.sum(d**2))
        self.values += d.size
        self.max_error = max(self.max_error, float(np.abs(d).max()) if d.size else 0.0)


@dataclass
class Unquantized:
    """The decoder's output from unquantized latents, against the restored rows: the loss."""

    ckpt: Checkpoint
    tile: int | None = None  # a --tile archive: each tile through the model, then put together
    margin: int = 0  # ... each tile encoded with this many pixels around it
    restored_sse: float = 0.0
    unquantized_sse: float = 0.0
    archived: dict[str, np.ndarray] | None = None  # key -> the archive's latent (no tiles)
    latent: np.ndarray | None = None  # per channel: sum of squared error, of z, of z^2, count
    kept: tuple[bool, ...] = ()  # the channels the archive stores (the others decode to 0)

    @classmethod
    def of(cls, checkpoint: str, archive: str | None) -> Unquantized:
        if not archive:
            raise ConfigError("--checkpoint measures the archive's quantizing loss: pass --archive too")
        meta = read_meta(archive_files(archive)[0])
        ckpt = load_checkpoint(checkpoint)
        if ckpt.fingerprint != meta.model_fingerprint:
            raise ConfigError(
                f"{checkpoint} is not the archive's model (fingerprint {ckpt.fingerprint[:12]}, "
                f"the archive's {meta.model_fingerprint[:12]})"
            )
        archived = None
        if not meta.tile:  # the archive's latents, to measure their error against the model's
            archived = {
                k: z
                for f in archive_files(archive)
                for b in iter_latents(f, hyper=hyper_of(ckpt.model))
                for k, z in zip(b.keys, b.latents, strict=True)
            }
        return cls(ckpt, meta.tile, meta.tile_margin, archived=archived, kept=meta.quantizer.active)

    @torch.inference_mode()
    def _through(
        self, x: np.ndarray, value_range: ValueRange, uri: str, key: str | None = None
    ) -> np.ndarray:
        arr, layout = to_model(x, self.ckpt.config, uri, value_range=value_range)
        size = None if self.ckpt.config.kind == "mlp" else (x.shape[0], x.shape[1])
        z = self.ckpt.model.encode(torch.from_numpy(arr[None])).mean
        if self.archived is not None and key in self.archived:
            self._add_latent(z[0].float().numpy(), self.archived[key])
        return layout.restore(self.ckpt.model.decode(z, size).float().clamp(0, 1).numpy()[0])

    def _add_latent(self, z: np.ndarray, stored: np.ndarray) -> None:
        c = z.shape[0]
        z64, err = (
            z.reshape(c, -1).astype(np.float64),
            (stored.reshape(c, -1) - z.reshape(c, -1)).astype(np.float64),
        )
        sums = np.stack([(err**2).sum(1), z64.sum(1), (z64**2).sum(1), np.full(c, z64.shape[1], np.float64)])
        self.latent = sums if self.latent is None else self.latent + sums

    @torch.inference_mode()
    def _tiles_through(self, x: np.ndarray, tile: int, value_range: ValueRange, uri: str) -> np.ndarray:
        """As the encoder cuts an image (each tile in its window, its own cells kept) and decode
        puts it back (each tile decoded with its neighbours' latents, where the model allows)."""
        model, config = self.ckpt.model, self.ckpt.config
        reach = tile_reach(model, tile)
        if reach is None:  # an MLP: each tile alone
            parts = [(p.y, p.x, self._through(t, value_range, uri)) for p, t in windows(x, tile, 0)]
            return assemble(parts, "?", uri)
        factor = config.downsample_factor  # type: ignore[union-attr]
        keys, latents, layouts = [], [], []
        for place, window in windows(x, tile, self.margin):
            arr, layout = to_model(window, config, uri, value_range=value_range)
            z = model.encode(torch.from_numpy(arr[None])).mean[0]
            keys.append(tile_key("?", place.y, place.x))
            latents.append(z[(slice(None), *place.cells(factor))].numpy())
            layouts.append(replace(layout, shape=(place.h, place.w, *layout.shape[2:])))
        image = LatentBatch(uri, 0, keys, latents, layouts, {})
        decoder = SampleDecoder(self.ckpt, torch.device("cpu"))
        in_context = context_windows(image, factor, reach)
        if in_context is None:
            outputs = decoder.run_model(latents, layouts)
        else:
            outputs = decoder.run_windows(in_context, layouts)
        tiles = SampleDecoder.restore(outputs, layouts, uri, 0)
        places = [split_tile_key(k) for k in keys]
        return assemble([(p[1], p[2], t) for p, t in zip(places, tiles, strict=True) if p], "?", uri)

    def add(
        self, x: np.ndarray, y: np.ndarray, value_range: ValueRange, uri: str, key: str | None = None
    ) -> None:
        if self.tile:  # as the encoder cut it and decode put it back together
            y0 = self._tiles_through(x, self.tile, value_range, uri)
        else:
            y0 = self._through(x, value_range, uri, key)
        x64 = x.astype(np.float64)
        self.restored_sse += float(np.sum((x64 - y.astype(np.float64)) ** 2))
        self.unquantized_sse += float(np.sum((x64 - y0.astype(np.float64)) ** 2))

    def line(self) -> str:
        loss = 10 * np.log10(max(self.restored_sse, 1e-30) / max(self.unquantized_sse, 1e-30))
        return (
            f"quantizing cost {loss:.3f} dB of PSNR over all rows (errors against the originals: "
            f"restored {self.restored_sse:.6g}, decoded from unquantized latents "
            f"{self.unquantized_sse:.6g}, sums of squares)"
        )

    def latent_line(self) -> str | None:
        """The archived latents' RMS error against the model's own, per channel over the
        channel's standard deviation (over all rows verified): the worst, and all together."""
        if self.latent is None:
            return None
        kept = np.asarray(self.kept, bool) if len(self.kept) == self.latent.shape[1] else slice(None)
        sse, s, s2, n = self.latent[:, kept]
        var = np.maximum(s2 / n - (s / n) ** 2, 1e-30)
        rel = np.sqrt(sse / n / var)
        overall = float(np.sqrt(sse.sum() / (var * n).sum()))
        dropped = len(self.kept) - int(np.count_nonzero(self.kept))
        return (
            f"latents: RMS error {100 * float(rel.max()):.3g}% of the channel's standard deviation in the "
            f"worst {'kept ' if dropped else ''}channel, {100 * overall:.3g}% over all of them (against the "
            "model's own latents of the originals)" + (f"; {dropped} channel(s) dropped" if dropped else "")
        )


def _peak(archive: str | None, originals: list[np.ndarray]) -> ValueRange:
    """The data's range: as the archive recorded it (its defaults where it recorded none), else
    the dtype's range for integers and the originals' extent for floats."""
    dtype = originals[0].dtype.name
    if archive:
        return read_meta(archive_files(archive)[0]).value_range or default_range(dtype)
    if dtype == "uint8":
        return default_range(dtype)
    if dtype in INTS:
        return dtype_range(dtype)
    lo = min(float(x.min()) for x in originals)
    hi = max(float(x.max()) for x in originals)
    return ValueRange(0.0, 1.0) if 0.0 <= lo and hi <= 1.0 else ValueRange(lo, max(hi, lo + 1e-12))


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, help="the dataset that was encoded")
    p.add_argument("--restored", required=True, help="output folder of jobs.decode (any --format)")
    p.add_argument(
        "--archive", help="archive folder: its recorded value range and its size against the input"
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also compress the samples with PNG, JPEG and WebP (at vaezip's PSNR) or zstd and "
        "float16 (arrays) and print their bytes beside the archive's (needs --archive)",
    )
    p.add_argument("--baseline-rows", type=int, default=256, help="--baseline: how many samples (the first)")
    p.add_argument("--array-key", help=".npz: the array that holds the samples (as encode was given)")
    add_sample_shape(p)
    p.add_argument(
        "--checkpoint",
        help="the archive's checkpoint: also decode the originals' unquantized latents and print "
        "the PSNR that quantizing cost over all rows (what --max-loss-db bounds; needs --archive)",
    )
    args = p.parse_args(argv)
    if args.baseline and not args.archive:
        raise ConfigError("--baseline compares against the archive's size: pass --archive too")
    reference = Unquantized.of(args.checkpoint, args.archive) if args.checkpoint else None
    firsts: list[tuple[np.ndarray, float]] = []  # (original, vaezip's PSNR) for --baseline
    errors = Errors(psnrs=[])
    input_bytes = 0
    float16_bytes = 0
    value_range: ValueRange | None = None
    for shard in plan_shards(args.original, suffix=""):
        restored = read_restored(args.restored, shard)
        read = ReadOptions(array_key=args.array_key, array_samples=args.sample_shape)
        batches = list(iter_batches(shard.source, read, shard.members))
        originals = [s for b in batches for s in b.samples]
        expected = [k for b in batches for k in (b.ids or sample_keys(shard.relpath, b.rows))]
        if sorted(restored) != sorted(expected):  # an older archive's keys
            if shard.members:  # image files, named with their extension before names version 3
                legacy = [p for b in batches for p in b.columns["path"]]
            elif not any(b.ids for b in batches):
                legacy = [legacy_sample_key(shard.relpath, r) for b in batches for r in b.rows]
            else:
                legacy = expected
            expected = legacy if sorted(restored) == sorted(legacy) else expected
        if sorted(restored) != sorted(expected):
            missing = sorted(set(expected) - set(restored))[:3]
            extra = sorted(set(restored) - set(expected))[:3]
            raise InputError(
                storage.join(args.restored, shard.name),
                f"keys differ from the original rows (missing {missing}, unexpected {extra})",
            )
        value_range = value_range or _peak(args.archive, originals)
        for key, x in zip(expected, originals, strict=True):
            y = restored[key]
            if y.shape != x.shape:
                raise InputError(
                    storage.join(args.restored, shard.name),
                    f"key {key!r}: shape {y.shape}, original {x.shape}",
                )
            errors.add(x, y, value_range.span)
            if reference:
                reference.add(x, y, value_range, shard.source, key)
            float16_bytes += 2 * x.size
            if args.baseline and len(firsts) < args.baseline_rows:
                firsts.append((x, errors.psnrs[-1]))
        input_bytes += shard.input_bytes()
    assert value_range is not None
    rmse = (errors.squared / max(errors.values, 1)) ** 0.5
    print(
        f"verified {len(errors.psnrs)} rows: mean PSNR {np.mean(errors.psnrs):.2f} dB "
        f"(peak {value_range.span:g}, values {value_range}); RMSE {rmse:.4g}, "
        f"max error {errors.max_error:.4g} (in the data's units)"
    )
    if reference:
        print(reference.line())
        latent = reference.latent_line()
        if latent:
            print(latent)
    if args.archive:
        manifest = json.loads(storage.read_bytes(storage.join(args.archive, "manifest.json")))
        size = manifest["bytes"]
        print(
            f"archive {size:,} bytes for {input_bytes:,} input bytes (ratio {input_bytes / size:.2f}; "
            f"{size / float16_bytes:.3f}x the values as float16), "
            f"{size / len(errors.psnrs):.1f} bytes per sample"
        )
        problems = check_archive(args.archive)
        for problem in problems:
            print(f"FAILED {problem}")
        if problems:
            return 1
        print("archive: every file matches its manifest entry (size, sha256, rows)")
        if args.baseline:
            print_baselines(firsts, size / len(errors.psnrs), value_range)
    return 0


def print_baselines(
    firsts: list[tuple[np.ndarray, float]], bytes_per_row: float, value_range: ValueRange
) -> None:
    samples = [x for x, _ in firsts]
    target = float(np.mean([p for _, p in firsts]))
    n = len(samples)
    rows = [("vaezip (this archive)", "-", bytes_per_row * n, target, True)]
    found = baselines(samples, target, value_range.span, value_range.lo)
    rows += [(b.codec, b.setting, b.bytes, b.psnr_db, b.reached) for b in found]
    print(f"baseline on the first {n} samples, at vaezip's mean PSNR of {target:.2f} dB where tunable:")
    print(
        f"  {'codec':<36} {'setting':<11} {'bytes':>11} {'bytes/sample':>13} {'PSNR dB':>8} {'x vaezip':>9}"
    )
    for codec, setting, size, p, reached in rows:
        shown = "lossless" if p > 200 else f"{p:.2f}" + ("" if reached else "*")
        ratio = size / rows[0][2]
        print(f"  {codec:<36} {setting:<11} {size:>11,.0f} {size / n:>13.1f} {shown:>8} {ratio:>8.2f}x")
    if not all(r[4] for r in rows):
        print("  * below vaezip's PSNR even at the best quality setting")
    best = min((r for r in rows if r[4]), key=lambda r: r[2])
    if best is rows[0]:
        print(f"smallest at vaezip's quality: vaezip ({best[2] / n:,.1f} bytes a sample)")
    else:
        print(
            f"smallest at vaezip's quality: {best[0]} ({best[2] / n:,.1f} bytes a sample); vaezip takes "
            f"{rows[0][2] / best[2]:.2f}x its bytes"
        )


if __name__ == "__main__":
    sys.exit(run_main(main))
