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

import brotli
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from pipeline.codec import (
    LAYOUTS,
    Codec,
    CodecConfig,
    CodecParams,
    row_bytes,
    rows_to_codes,
    train_dictionary,
)


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
    """A Parquet file of one ``vz_codes`` column, as the archive writer stores it."""
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"vz_codes": pa.array(payloads, pa.binary())}),
        buf,
        compression=compression,
        compression_level=level,
        use_dictionary=False,
        write_statistics=False,
        row_group_size=1024,
    )
    return buf


def speeds(
    codes: np.ndarray,
    layout: str,
    levels: tuple[int, ...] = (1, 3, 9, 19),
    repeats: int = 3,
    centers: tuple[int, ...] = (),
) -> list[dict]:
    """Compress and decompress MB/s (of uncompressed codes) per zstd level and framing: per-row
    frames (dictionary trained on the rows), and a Parquet column of raw rows compressed by
    Parquet's zstd, as the archive writer stores ``vz_codes`` in column framing. The folding
    (``centers``) is timed with them: compress from codes, decompress back to codes."""
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
        n, c, p = codes.shape
        for framing in ("row", "column"):
            c_times, d_times = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                laid = row_bytes(codes, layout, centers)
                if framing == "row":
                    frames = codec.compress(laid)
                    c_times.append(time.perf_counter() - start)
                    size = sum(len(f) for f in frames)
                    start = time.perf_counter()
                    back = [codec.decompress(f) for f in frames]
                else:
                    buf = _codes_column(laid, "zstd", level)
                    c_times.append(time.perf_counter() - start)
                    size = len(buf.getvalue())
                    start = time.perf_counter()
                    back = pq.read_table(io.BytesIO(buf.getvalue())).column("vz_codes").to_pylist()
                got = rows_to_codes(back, (c, p), codes.dtype, layout, centers)
                d_times.append(time.perf_counter() - start)
                assert np.array_equal(got, codes)
            out.append(
                {
                    "level": level,
                    "framing": framing,
                    "bytes": size,
                    "compress_mb_s": [mb / t for t in c_times],
                    "decompress_mb_s": [mb / t for t in d_times],
                }
            )
    return out


def rans_speeds(codes: np.ndarray, params: CodecParams, width: int, repeats: int = 3) -> dict:
    """Codec ``rans`` as the archive stores it: compress from codes to a Parquet column of
    streams (zstd level 1 over the column, as the writer does), decompress from the Parquet
    bytes back to codes; MB/s of uncompressed codes, one core."""
    n, c, p = codes.shape
    mb = codes.nbytes / 1e6
    codec = Codec(params)
    kind, level = params.column_compression
    c_times, d_times, size = [], [], 0
    for _ in range(repeats + 1):  # the first round, untimed, compiles the loops (numba)
        start = time.perf_counter()
        payloads, _ = codec.encode(codes, width)
        buf = _codes_column(payloads, kind, level)
        c_times.append(time.perf_counter() - start)
        size = len(buf.getvalue())
        start = time.perf_counter()
        back = pq.read_table(io.BytesIO(buf.getvalue())).column("vz_codes").to_pylist()
        raws = codec.raws(back, [(c, p, width)] * n, codes.dtype)
        got = rows_to_codes(raws, (c, p), codes.dtype, "channel")
        d_times.append(time.perf_counter() - start)
        assert np.array_equal(got, codes)
    c_times, d_times = c_times[1:], d_times[1:]
    return {
        "bytes": size,
        "model_bytes": len(params.model),
        "compress_mb_s": [mb / t for t in c_times],
        "decompress_mb_s": [mb / t for t in d_times],
    }
