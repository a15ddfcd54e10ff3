"""A third party's decoder of vaezip archives, written from docs/FORMAT.md alone.

It imports nothing from vaezip: only pyarrow, zstandard, numpy and the standard library.
"""

import base64
import json
import zlib

import numpy as np
import pyarrow.parquet as pq
import zstandard


def read_archive_codes(path):
    """Rows of one archive file as dicts: key, codes, latent (dequantized), shape, dtype."""
    pf = pq.ParquetFile(path)
    meta = json.loads(pf.schema_arrow.metadata[b"vaezip"])
    assert meta["format_version"] in (1, 2)
    q, c = meta["quantizer"], meta["codec"]
    assert c["name"] == "zstd"
    per_row_frames = c.get("framing", "row") == "row"
    dict_bytes = base64.b64decode(c["dictionary_b64"])
    dctx = zstandard.ZstdDecompressor(
        dict_data=zstandard.ZstdCompressionDict(dict_bytes) if dict_bytes else None
    )
    active = np.array(q["active"], dtype=bool)
    lo = np.array(q["lo"])[active]
    step = np.array(q["step"])[active]
    dtype = np.dtype("<u1") if max(q["levels"]) <= 256 else np.dtype("<u2")
    rows = []
    for row in pf.read().to_pylist():
        raw = dctx.decompress(row["vz_codes"]) if per_row_frames else row["vz_codes"]
        assert zlib.crc32(raw) == row["vz_crc32"]
        lshape = row["vz_latent_shape"]
        positions = int(np.prod(lshape[1:])) if len(lshape) > 1 else 1
        codes = np.frombuffer(raw, dtype=dtype)
        if c["layout"] == "channel":
            codes = codes.reshape(int(active.sum()), positions)
        else:
            codes = codes.reshape(positions, int(active.sum())).T
        if c.get("transform", "none") == "fold":  # undo the fold around each channel's center
            top = np.iinfo(dtype).max
            m = np.array(c["centers"], dtype=np.int64)[:, None]
            k = np.minimum(m, top - m)
            v = codes.astype(np.int64)
            near = np.where(v % 2 == 1, (v + 1) // 2, -(v // 2))
            far = np.where(top - m > m, v - k, k - v)
            codes = (m + np.where(v <= 2 * k, near, far)).astype(dtype)
        latent = np.zeros((len(active), positions), dtype=np.float32)
        latent[active] = (lo[:, None] + codes.astype(np.float64) * step[:, None]).astype(np.float32)
        rows.append(
            {
                "key": row["vz_key"],
                "codes": codes,
                "latent": latent.reshape(lshape),
                "shape": row["vz_shape"],
                "dtype": row["vz_dtype"],
            }
        )
    return rows
