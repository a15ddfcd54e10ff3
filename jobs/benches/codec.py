"""The codec against its bounds and against general-purpose coders, on real quantized codes.

Bounds: the empirical entropy of the symbols given their channel, and given their channel and
left neighbour (the previous position in the same latent row, or for a one-position MLP latent
the previous channel). Both are measured on the very codes they bound, with no cost for the
model itself, so they are optimistic: a real coder must also pay to describe the statistics.
"""

from __future__ import annotations

import io
import lzma
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import brotli
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from pipeline.codec.codec import (
    LAYOUTS,
    Codec,
    CodecConfig,
    CodecParams,
    row_bytes,
    rows_to_codes,
    train_dictionary,
)
from pipeline.codec.format import ROW_GROUP_ROWS

T = TypeVar("T")
PASS_SECONDS = 0.25  # each speed repetition: passes over the codes for at least this long


def _entropy_bits(symbols: np.ndarray, contexts: np.ndarray) -> float:
    """Sum over symbols of -log2 p(symbol | context), p counted on the data itself."""
    pairs = contexts.astype(np.int64) * 65536 + symbols.astype(np.int64)
    _, pair_counts = np.unique(pairs, return_counts=True)
    _, ctx_counts = np.unique(contexts, return_counts=True)
    return float(-(pair_counts * np.log2(pair_counts)).sum() + (ctx_counts * np.log2(ctx_counts)).sum())


def entropy_bounds(codes: np.ndarray, width: int) -> dict:
    """``codes`` (N, C, P) integer symbols, P = H*W positions in row-major order."""
    n, c, p = codes.shape
    chan = np.broadcast_to(np.arange(c)[None, :, None], codes.shape)
    if p > 1:
        left = np.full_like(codes, -1, dtype=np.int64)
        left[:, :, 1:] = codes[:, :, :-1]
        left[:, :, np.arange(p) % width == 0] = -1  # a row's first column has none
    else:
        left = np.full_like(codes, -1, dtype=np.int64)
        left[:, 1:, :] = codes[:, :-1, :]
    h_chan = _entropy_bits(codes.ravel(), chan.ravel())
    h_left = _entropy_bits(codes.ravel(), (chan.astype(np.int64) * 70000 + left + 1).ravel())
    return {"symbols": int(codes.size), "h_channel_bytes": h_chan / 8, "h_channel_left_bytes": h_left / 8}


def coders(codes: np.ndarray, layout: str) -> dict:
    """Bytes of the same codes, laid out as vaezip lays them out, under other coders; xz -9 of
    the unfolded codes is also given in the layout that suits it best (the smaller of the two)."""
    rows = row_bytes(codes, layout)
    raw = b"".join(rows)
    xz_best = min(len(lzma.compress(b"".join(row_bytes(codes, lay)), preset=9)) for lay in LAYOUTS)
    return {
        "xz9_best_layout_bytes": xz_best,
        "raw_bytes": len(raw),
        "zstd3_column_bytes": len(zstandard.ZstdCompressor(level=3).compress(raw)),
        "zstd19_column_bytes": len(zstandard.ZstdCompressor(level=19).compress(raw)),
        "xz9_column_bytes": len(lzma.compress(raw, preset=9)),
        "brotli11_column_bytes": len(brotli.compress(raw, quality=11)),
        # per row: the raw LZMA2 stream, without the .xz container's 60-odd bytes of headers
        "xz9_per_row_bytes": sum(
            len(lzma.compress(r, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]))
            for r in rows
        ),
        "brotli11_per_row_bytes": sum(len(brotli.compress(r, quality=11)) for r in rows),
    }


def _codes_column(payloads: list[bytes], compression: str, level: int | None) -> io.BytesIO:
    """A Parquet file of one ``vz_codes`` column, as the archive writer stores it (page
    checksums included)."""
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"vz_codes": pa.array(payloads, pa.binary())}),
        buf,
        compression=compression,
        compression_level=level,
        use_dictionary=False,
        write_statistics=False,
        write_page_checksum=True,
        row_group_size=ROW_GROUP_ROWS,
    )
    return buf


def _read_codes_column(data: bytes) -> list[bytes]:
    """The ``vz_codes`` values back, read as ``format.iter_stored`` reads an archive: every
    page checksum verified, in batches of 256 rows."""
    pf = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
    out: list[bytes] = []
    for batch in pf.iter_batches(batch_size=256, columns=["vz_codes"]):
        out += batch.column(0).to_pylist()
    return out


def _per_pass(fn: Callable[[], T], min_seconds: float = PASS_SECONDS) -> tuple[float, T]:
    """Seconds per call of ``fn``, averaged over as many calls as fill ``min_seconds``, and
    the last call's result. One pass over the demo codes takes about 2 ms: timed alone, it
    measures this shared machine's hiccups and the first passes' page faults as much as
    the coder."""
    calls = 0
    start = time.perf_counter()
    while True:
        result = fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls, result


def _zstd_pack(
    codes: np.ndarray, layout: str, centers: tuple[int, ...], codec: Codec, framing: str, level: int
) -> list[bytes] | bytes:
    laid = row_bytes(codes, layout, centers)
    if framing == "row":
        return codec.compress(laid)
    return _codes_column(laid, "zstd", level).getvalue()


def _zstd_unpack(
    stored: list[bytes] | bytes, codec: Codec, codes: np.ndarray, layout: str, centers: tuple[int, ...]
) -> np.ndarray:
    back = [codec.decompress(f) for f in stored] if isinstance(stored, list) else _read_codes_column(stored)
    return rows_to_codes(back, codes.shape[1:], codes.dtype, layout, centers)


def speeds(
    codes: np.ndarray,
    layout: str,
    levels: tuple[int, ...] = (1, 3, 9, 19),
    repeats: int = 3,
    centers: tuple[int, ...] = (),
) -> list[dict]:
    """Compress and decompress MB/s (of uncompressed codes) per zstd level and framing: per-row
    frames (dictionary trained on the rows), and a Parquet column of raw rows compressed by
    Parquet's zstd, as the archive writer stores ``vz_codes`` in column framing and its
    reader reads it. The folding (``centers``) is timed with them: compress from codes,
    decompress back to codes. Each repetition times passes for ``PASS_SECONDS``."""
    rows = row_bytes(codes, layout, centers)
    mb = sum(len(r) for r in rows) / 1e6
    out = []
    for level in levels:
        cfg = CodecConfig(level=level, layout=layout, framing="row")
        codec = Codec(
            CodecParams(
                level=level, layout=layout, framing="row", dictionary=train_dictionary(rows[:2048], cfg)
            )
        )
        for framing in ("row", "column"):
            pack = partial(_zstd_pack, codes, layout, centers, codec, framing, level)
            c_times, d_times = [], []
            for _ in range(repeats):
                t, stored = _per_pass(pack)
                c_times.append(t)
                t, got = _per_pass(partial(_zstd_unpack, stored, codec, codes, layout, centers))
                d_times.append(t)
                assert np.array_equal(got, codes)
            out.append(
                {
                    "level": level,
                    "framing": framing,
                    "bytes": sum(map(len, stored)) if isinstance(stored, list) else len(stored),
                    "compress_mb_s": [mb / t for t in c_times],
                    "decompress_mb_s": [mb / t for t in d_times],
                }
            )
    return out


def _rans_pack(codec: Codec, codes: np.ndarray, width: int, compression: tuple[str, int | None]) -> bytes:
    payloads, _ = codec.encode(codes, width)
    return _codes_column(payloads, *compression).getvalue()


def _rans_unpack(stored: bytes, codec: Codec, codes: np.ndarray, width: int) -> np.ndarray:
    n, c, p = codes.shape
    raws = codec.raws(_read_codes_column(stored), [(c, p, width)] * n, codes.dtype)
    return rows_to_codes(raws, (c, p), codes.dtype, "channel")


def rans_speeds(codes: np.ndarray, params: CodecParams, width: int, repeats: int = 3) -> dict:
    """Codec ``rans`` as the archive stores it: compress from codes to a Parquet column of
    streams (zstd level 1 over the column, as the writer does), decompress from the Parquet
    bytes (read as the archive reader reads them) back to codes; MB/s of uncompressed codes,
    one core. Each repetition times passes for ``PASS_SECONDS``."""
    mb = codes.nbytes / 1e6
    codec = Codec(params)
    pack = partial(_rans_pack, codec, codes, width, params.column_compression)
    _rans_unpack(pack(), codec, codes, width)  # compiles the loops (numba), untimed
    c_times, d_times = [], []
    for _ in range(repeats):
        t, stored = _per_pass(pack)
        c_times.append(t)
        t, got = _per_pass(partial(_rans_unpack, stored, codec, codes, width))
        d_times.append(t)
        assert np.array_equal(got, codes)
    return {
        "bytes": len(stored),
        "model_bytes": len(params.model),
        "compress_mb_s": [mb / t for t in c_times],
        "decompress_mb_s": [mb / t for t in d_times],
    }
