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
    assert c["name"] in ("zstd", "rans")
    rans = c["name"] == "rans"
    model = read_rans_model(base64.b64decode(c["model_b64"])) if rans else None
    per_row_frames = c.get("framing", "row") == "row" and not rans
    dict_bytes = base64.b64decode(c.get("dictionary_b64", ""))
    dctx = zstandard.ZstdDecompressor(
        dict_data=zstandard.ZstdCompressionDict(dict_bytes) if dict_bytes else None
    )
    active = np.array(q["active"], dtype=bool)
    lo = np.array(q["lo"])[active]
    step = np.array(q["step"])[active]
    dtype = np.dtype("<u1") if max(q["levels"]) <= 256 else np.dtype("<u2")
    rows = []
    for row in pf.read().to_pylist():
        lshape = row["vz_latent_shape"]
        positions = int(np.prod(lshape[1:])) if len(lshape) > 1 else 1
        if rans:
            width = lshape[-1] if len(lshape) > 1 else 1
            codes = rans_decode(row["vz_codes"], model, positions // width, width, np.iinfo(dtype).max)
            raw = codes.astype(dtype).tobytes()
        else:
            raw = dctx.decompress(row["vz_codes"]) if per_row_frames else row["vz_codes"]
        assert zlib.crc32(raw) == row["vz_crc32"]
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


def read_rans_model(blob):
    """FORMAT.md, codec rans: the model's varints, out of their zstd frame."""
    raw = zstandard.ZstdDecompressor().decompress(blob)
    version, scale_bits, groups, signs = raw[:4]
    assert version in (1, 2)
    pos = 4

    def take():
        nonlocal pos
        value = shift = 0
        while True:
            b = raw[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    channels = []
    for _ in range(take()):
        center, size = take(), take()
        edges = [take() for _ in range(groups - 1)]
        tables = [[take() for _ in range(size)] for _ in range(groups * signs)]
        channels.append({"center": center, "size": size, "edges": edges, "tables": tables})

    def signed():  # zigzag
        v = take()
        return v // 2 if v % 2 == 0 else -(v + 1) // 2

    lift = []  # version 2: per channel k > 0, a bias and k weights
    if version == 2:
        lift = [(signed(), [signed() for _ in range(k)]) for k in range(1, len(channels))]
    assert pos == len(raw)
    return {"scale_bits": scale_bits, "groups": groups, "signs": signs, "channels": channels, "lift": lift}


def rans_decode(stream, model, height, width, top):
    """One row's rANS stream -> its (channels, height * width) codes, one symbol at a time."""
    n = model["scale_bits"]
    words = [stream[i] | stream[i + 1] << 8 for i in range(0, len(stream), 2)]
    state = words[0] | words[1] << 16
    pos = 2

    def symbol(table):  # the symbol whose slots hold state mod 2**n; then renormalise
        nonlocal state, pos
        slot = state & ((1 << n) - 1)
        sym = cum = 0
        while slot >= cum + table[sym]:
            cum += table[sym]
            sym += 1
        f = table[sym]
        state = f * (state >> n) + slot - cum
        if state < 1 << 16:
            state = state << 16 | words[pos]
            pos += 1
        return sym

    def _uniform():  # a uniform 16-bit word: frequency 1 out of 2**16
        nonlocal state, pos
        value = state & 0xFFFF
        state >>= 16
        if state < 1 << 16:
            state = state << 16 | words[pos]
            pos += 1
        return value

    chans = model["channels"]
    x = np.zeros((len(chans), height, width), dtype=np.int64)
    res = np.zeros_like(x)
    for k, ch in enumerate(chans):
        for i in range(height):
            for j in range(width):
                a = 0
                if i > 0:
                    jl, jr = max(j - 1, 0), min(j + 1, width - 1)
                    up = x[k, i - 1]
                    ru = res[k, i - 1]
                    a = abs(up[j] - up[jl]) + abs(up[jr] - up[j]) + abs(ru[j]) + abs(ru[jl]) + abs(ru[jr])
                a = min(int(a), 4095)
                g = sum(1 for e in ch["edges"] if e < a)
                s = 1 if k == 0 else int(np.sign(res[k - 1, i, j])) + 1
                v = symbol(ch["tables"][g * model["signs"] + s])
                if v == ch["size"] - 1:  # the escape: two uniform words, low first
                    v = _uniform()
                    v |= _uniform() << 16
                d = v // 2 if v % 2 == 0 else -(v + 1) // 2
                if i == 0:
                    pred = x[k, 0, j - 1] if j > 0 else ch["center"]
                else:
                    pn = x[k, i - 1, j]
                    pw = x[k, i, j - 1] if j > 0 else pn
                    pnw = x[k, i - 1, j - 1] if j > 0 else pn
                    pred = sorted([pw, pn, pw + pn - pnw])[1]
                x[k, i, j] = pred + d
                res[k, i, j] = d
    assert state == 1 << 16 and pos == len(words)
    for k, (bias, weights) in enumerate(model["lift"], start=1):  # channel prediction
        x[k] += (bias + sum(wt * x[j] for j, wt in enumerate(weights))) >> 8
    assert ((0 <= x) & (x <= top)).all()
    return x.reshape(len(chans), height * width)
