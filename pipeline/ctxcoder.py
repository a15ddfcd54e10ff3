r"""A context-model entropy coder for quantized latent codes (codec ``rans``; FORMAT.md).

Each row's codes, channel by channel, line by line, left to right, are predicted from their
decoded neighbours in the same channel (the median edge detector of LOCO-I / JPEG-LS: left,
up, up-left), and the zigzagged residual is coded with rANS under a static frequency table
chosen by what the decoder already knows:

- the channel;
- the activity in the line above (``|N-NW| + |NE-N|`` and the residual sizes at NW, N and NE),
  cut into ``GROUPS`` buckets at the channel's calibration quantiles;
- the sign of the residual at the same position in the previous channel (latent channels
  move together).

The tables are fitted once per job on the calibration codes and stored in every file's
footer; a row is one rANS stream of its own (its 4-byte final state opens it), so a row
decodes alone, as with every other framing. Residuals a table has no room for are escaped
and sent as two uniform 16-bit words.

Where the gain over zstd comes from, measured on the demo photo model's codes (137 held-out
crops, 8 x 16 x 16 codes each, posterior step): zstd codes each byte from one literal table
per block, shared by every channel and blind to the neighbours; xz -9 gains from its one-byte
repeat matches and adaptive probabilities. The empirical entropy of the residuals given only
the channel is 41,609 bytes, given these contexts 36,684; the coder stores 37,270 bytes of
streams and a 1,594-byte model (xz -9: 39,388 in its better layout; zstd -9: 48,513).
Contexts that also looked at the left neighbour stored 4% less (35,630 bytes of streams
against 37,104, at 12-bit frequencies) but decoded at under 100 MB/s: each table then
depends on the symbol just decoded. ``python -m jobs.bench --only codec`` measures the coder
as the archive stores it, model included.

The loops are compiled with numba (the one door to it): decoding is sequential per symbol,
which Python could not do at a useful speed. Where the decoder's time goes (numba variants
on the same photo codes, one core of this 2.6 GHz machine, 2026-11-29): the rANS step alone,
tables given, 3.9 ns a symbol, bound by its own dependency chain (two interleaved states:
2.3 ns); with the prediction and the stores, tables still given, 4.8 ns (210 MB/s); working
out each line's tables as well, 7.5 ns (about 130 MB/s), and 6.9-7.4 ns (136-146 MB/s over
runs) once the codes were written in their own type instead of int64. Not the tables' size:
9- and 8-bit frequencies (tables a half and a quarter the size) decoded as fast. Two
interleaved states per row measured 7-10% faster overall (and 1.2% larger), too little to
change the format for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import zstandard

SCALE_BITS = 10  # every table's frequencies sum to 2**SCALE_BITS
GROUPS = 6  # activity buckets per channel
SIGNS = 3  # previous channel's residual: negative, zero, positive
MAX_ALPHABET = 1024  # residual symbols per table at most; larger ones are escaped
ACT_MAX = 4095  # activities above this share the last bucket
MODEL_VERSION = 1
_L = 1 << 23  # rANS state interval [L, 256 L)
_PRIOR = 2.0  # pseudo-counts a context borrows from its channel's distribution


@dataclass(frozen=True)
class CtxModel:
    """The fitted tables. ``freqs`` is (A * GROUPS * SIGNS, K) with K the largest alphabet;
    table ``(k * GROUPS + g) * SIGNS + s``'s last used entry, ``sizes[k] - 1``, is the escape."""

    centers: np.ndarray  # (A,) int64: the value a row's first position is predicted as
    edges: np.ndarray  # (A, GROUPS - 1) int64, ascending: bucket = how many edges < activity
    sizes: np.ndarray  # (A,) int64: each channel's table length, escape included
    freqs: np.ndarray  # (A * GROUPS * SIGNS, K) int64

    @property
    def channels(self) -> int:
        return len(self.centers)

    def to_bytes(self) -> bytes:
        """The model as FORMAT.md stores it: a zstd frame of unsigned LEB128 varints."""
        out = bytearray([MODEL_VERSION, SCALE_BITS, GROUPS, SIGNS])
        _varint(out, self.channels)
        for k in range(self.channels):
            _varint(out, int(self.centers[k]))
            _varint(out, int(self.sizes[k]))
            for e in self.edges[k]:
                _varint(out, int(e))
            for g in range(GROUPS):
                for s in range(SIGNS):
                    for f in self.freqs[(k * GROUPS + g) * SIGNS + s, : self.sizes[k]]:
                        _varint(out, int(f))
        return zstandard.ZstdCompressor(level=19).compress(bytes(out))

    @classmethod
    def from_bytes(cls, data: bytes) -> CtxModel:
        """Parse and check a stored model; ValueError names what is wrong."""
        try:
            raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
        except zstandard.ZstdError as err:
            raise ValueError(f"context model does not decompress ({err})") from err
        if raw[:4] != bytes([MODEL_VERSION, SCALE_BITS, GROUPS, SIGNS]):
            raise ValueError(
                f"context model header {list(raw[:4])} is not {MODEL_VERSION, SCALE_BITS, GROUPS, SIGNS}"
            )
        pos = [4]

        def take() -> int:
            value, shift = 0, 0
            while True:
                if pos[0] >= len(raw) or shift > 63:
                    raise ValueError("context model is truncated")
                b = raw[pos[0]]
                pos[0] += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    return value

        a = take()
        if not 0 < a <= 65536:
            raise ValueError(f"context model has {a} channels")
        centers, sizes, edges, tables = [], [], [], []
        for _ in range(a):
            centers.append(take())
            size = take()
            if not 1 <= size <= MAX_ALPHABET:
                raise ValueError(f"context model table of {size} symbols")
            sizes.append(size)
            edges.append([take() for _ in range(GROUPS - 1)])
            for _ in range(GROUPS * SIGNS):
                tables.append([take() for _ in range(size)])
        if pos[0] != len(raw):
            raise ValueError("context model has trailing bytes")
        width = max(sizes)
        freqs = np.zeros((len(tables), width), dtype=np.int64)
        for i, t in enumerate(tables):
            if sum(t) != 1 << SCALE_BITS or t[-1] < 1:
                raise ValueError(f"context model table {i} does not sum to {1 << SCALE_BITS} with an escape")
            freqs[i, : len(t)] = t
        e = np.asarray(edges, dtype=np.int64).reshape(a, GROUPS - 1)
        if np.any(np.diff(e, axis=1) < 0):
            raise ValueError("context model bucket edges are not ascending")
        return cls(np.asarray(centers, dtype=np.int64), e, np.asarray(sizes, dtype=np.int64), freqs)


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


@dataclass(frozen=True)
class _Tables:
    """The model as the compiled loops use it."""

    centers: np.ndarray
    buckets: np.ndarray  # (A, ACT_MAX + 1) uint8
    sizes: np.ndarray
    freqs: np.ndarray  # (T, K) uint32
    cums: np.ndarray  # (T, K) uint32
    packed: np.ndarray  # (T, 2**SCALE_BITS) uint32: symbol, frequency, offset (``_tables``)


def _tables(model: CtxModel) -> _Tables:
    act = np.arange(ACT_MAX + 1)
    buckets = np.stack([np.searchsorted(e, act, side="left") for e in model.edges]).astype(np.uint8)
    freqs = model.freqs.astype(np.uint32)
    cums = (np.cumsum(freqs, axis=1) - freqs).astype(np.uint32)
    slots = np.stack([np.repeat(np.arange(f.size, dtype=np.uint16), f) for f in model.freqs])
    # per slot, one word: its symbol, the symbol's frequency and the slot's offset in it
    sym = slots.astype(np.uint32)
    f = np.take_along_axis(freqs, slots.astype(np.int64), axis=1)
    bias = np.arange(1 << SCALE_BITS, dtype=np.uint32)[None, :] - np.take_along_axis(
        cums, slots.astype(np.int64), axis=1
    )
    packed = (sym << np.uint32(2 * SCALE_BITS)) | (f << np.uint32(SCALE_BITS)) | bias
    return _Tables(model.centers, buckets, model.sizes, freqs, cums, packed)


# ---- the compiled loops ------------------------------------------------------------------
#
# A row's codes and residuals are flat arrays of (A, H, W) in C order: position (k, i, j) is
# ``(k * h + i) * w + j``. A line's tables depend only on the line above and the channel
# before, so they are worked out for the whole line first and the sequential part, one
# symbol after another, is left with the rANS step and the prediction; tables that also
# looked at the left neighbour (4% smaller on the demo photo codes) would put the context
# work on that sequential path. The rANS state is 32 bits, in [2**16, 2**32), renormalised
# 16 bits at a time (at most once a symbol, as SCALE_BITS <= 16), words little-endian.

_LOW = 1 << 16


@numba.njit(inline="always")
def _contexts(x, res, k, i, w, hw, base, bk, tabs, acts):  # pragma: no cover - compiled
    """Tables (and activities) of line i of channel k, which starts at ``base``; ``bk`` is the
    channel's activity-to-bucket table. ``_decode`` writes the same rule out in its loop."""
    tk = k * GROUPS * SIGNS + 1
    prev = base - hw if k > 0 else base  # k == 0: no channel before, the sign term is 0
    sg = 1 if k > 0 else 0
    if i > 0:
        up = base - w
        n0 = x[up]
        r0 = abs(res[up])
        nl = n0
        rl = r0
        for j in range(w):  # NW, N, NE rolled along the line above; edges repeat
            jr = up + j + 1 if j + 1 < w else up + j
            nr = x[jr]
            rr = abs(res[jr])
            activity = min(abs(n0 - nl) + abs(nr - n0) + rl + r0 + rr, ACT_MAX)
            d = res[prev + j] * sg
            acts[j] = activity
            tabs[j] = tk + bk[activity] * SIGNS + (d > 0) - (d < 0)
            nl = n0
            rl = r0
            n0 = nr
            r0 = rr
    else:
        for j in range(w):
            d = res[prev + j] * sg
            acts[j] = 0
            tabs[j] = tk + bk[0] * SIGNS + (d > 0) - (d < 0)


@numba.njit(inline="always")
def _median(pw, pn, pnw):  # pragma: no cover - compiled
    """LOCO-I's median edge detector: the median of W, N and W + N - NW."""
    return max(min(pw, pn), min(max(pw, pn), pw + pn - pnw))


@numba.njit(inline="always")
def _predict(x, i, j, w, q, center):  # pragma: no cover - compiled
    """Code q's prediction, with FORMAT.md's fall-backs at the edges."""
    if i == 0:
        return x[q - 1] if j > 0 else center
    pn = x[q - w]
    return _median(x[q - 1], pn, x[q - w - 1]) if j > 0 else pn


@numba.njit(inline="always")
def _residuals(x, i, w, base, center, res):  # pragma: no cover - compiled
    for j in range(w):
        q = base + j
        res[q] = x[q] - _predict(x, i, j, w, q, center)


@numba.njit(cache=True, nogil=True)
def _features(codes, centers, buckets, res, act, tab):  # pragma: no cover - compiled
    """Residuals, activities and tables of (N, A, H, W) int64 codes (into arrays of that
    shape); ``buckets`` decides the tables."""
    n, a, h, w = codes.shape
    hw = h * w
    for r in range(n):
        x = codes[r].ravel()
        rr = res[r].ravel()
        ar = act[r].ravel()
        tr = tab[r].ravel()
        for k in range(a):
            for i in range(h):
                base = (k * h + i) * w
                _contexts(x, rr, k, i, w, hw, base, buckets[k], tr[base : base + w], ar[base : base + w])
                _residuals(x, i, w, base, centers[k], rr)


@numba.njit(cache=True, nogil=True)
def _encode(codes, centers, buckets, sizes, freqs, cums, out, ends):  # pragma: no cover
    """(N, A, H, W) int64 codes -> rows' streams, packed into ``out``; row r is
    out[ends[r-1]:ends[r]]. Returns False when ``out`` is too small."""
    n, a, h, w = codes.shape
    hw = h * w
    per = a * hw
    res = np.empty(per, dtype=np.int64)
    act = np.empty(w, dtype=np.int64)
    tabs = np.empty(per, dtype=np.int64)
    syms = np.empty(per, dtype=np.int64)
    esc = np.empty(per, dtype=np.int64)
    tmp = np.empty(per * 3 + 2, dtype=np.uint16)  # at most a word and an escape's 2 a symbol
    pos = 0
    for r in range(n):
        x = codes[r].ravel()
        for k in range(a):
            top = sizes[k] - 1
            for i in range(h):
                base = (k * h + i) * w
                _contexts(x, res, k, i, w, hw, base, buckets[k], tabs[base : base + w], act)
                _residuals(x, i, w, base, centers[k], res)
                for q in range(base, base + w):
                    d = res[q]
                    v = 2 * d if d >= 0 else -2 * d - 1
                    if v < top and freqs[tabs[q], v] > 0:
                        syms[q] = v
                        esc[q] = -1
                    else:
                        syms[q] = top
                        esc[q] = v
        # rANS runs backwards: the last symbol first, words written from the end of tmp
        state = np.uint64(_LOW)
        p = tmp.size
        for q in range(per - 1, -1, -1):
            if esc[q] >= 0:
                for b in range(1, -1, -1):  # two uniform 16-bit words, decoded low word first
                    if state >= np.uint64(_LOW):
                        p -= 1
                        tmp[p] = np.uint16(state & np.uint64(0xFFFF))
                        state >>= np.uint64(16)
                    state = (state << np.uint64(16)) + np.uint64((esc[q] >> (16 * b)) & 0xFFFF)
            t = tabs[q]
            f = np.uint64(freqs[t, syms[q]])
            if state >= (np.uint64(_LOW >> SCALE_BITS) << np.uint64(16)) * f:
                p -= 1
                tmp[p] = np.uint16(state & np.uint64(0xFFFF))
                state >>= np.uint64(16)
            state = ((state // f) << np.uint64(SCALE_BITS)) + (state % f) + np.uint64(cums[t, syms[q]])
        p -= 2
        tmp[p] = np.uint16(state & np.uint64(0xFFFF))
        tmp[p + 1] = np.uint16(state >> np.uint64(16))
        size = 2 * (tmp.size - p)
        if pos + size > out.size:
            return False
        for b in range(tmp.size - p):
            out[pos + 2 * b] = np.uint8(tmp[p + b] & 0xFF)
            out[pos + 2 * b + 1] = np.uint8(tmp[p + b] >> 8)
        pos += size
        ends[r] = pos
    return True


@numba.njit(inline="always")
def _word(data, p):  # pragma: no cover - compiled
    """The little-endian 16-bit word at byte p."""
    return np.uint64(data[p]) | (np.uint64(data[p + 1]) << np.uint64(8))


@numba.njit(cache=True, nogil=True)
def _decode(data, starts, ends, centers, buckets, sizes, packed, top, out):  # pragma: no cover
    """Rows' streams -> (N, A, H, W) codes in ``out`` (of the code type: numba would
    compute on its unsigned values unsigned, hence the casts). Returns (-1, 0), or the first
    bad row's index and why (``_REASONS``)."""
    n, a, h, w = out.shape
    hw = h * w
    per = a * hw
    res = np.zeros(per, dtype=np.int64)
    tabs = np.empty(w, dtype=np.int64)
    mask = np.uint64((1 << SCALE_BITS) - 1)
    low = np.uint64(_LOW)
    for r in range(n):
        x = out[r].ravel()
        p = starts[r]
        end = ends[r]
        if end - p < 4 or (end - p) % 2:
            return r, 1
        state = _word(data, p) | (_word(data, p + 2) << np.uint64(16))
        p += 4
        if state < low:
            return r, 2
        outside = False
        for k in range(a):
            last = sizes[k] - 1
            center = centers[k]
            bk = buckets[k]
            tk = k * GROUPS * SIGNS + 1
            sg = 1 if k > 0 else 0
            for i in range(h):
                base = (k * h + i) * w
                # _contexts, written out (as a call the loop decoded 15% slower)
                prev = base - hw if k > 0 else base
                if i > 0:
                    up = base - w
                    n0 = np.int64(x[up])
                    r0 = abs(res[up])
                    nl = n0
                    rl = r0
                    for j in range(w):
                        jr = up + j + 1 if j + 1 < w else up + j
                        nr = np.int64(x[jr])
                        rr = abs(res[jr])
                        activity = min(abs(n0 - nl) + abs(nr - n0) + rl + r0 + rr, ACT_MAX)
                        d = res[prev + j] * sg
                        tabs[j] = tk + bk[activity] * SIGNS + (d > 0) - (d < 0)
                        nl = n0
                        rl = r0
                        n0 = nr
                        r0 = rr
                else:
                    for j in range(w):
                        d = res[prev + j] * sg
                        tabs[j] = tk + bk[0] * SIGNS + (d > 0) - (d < 0)
                pw = center  # the left neighbour, carried in a register
                for j in range(w):
                    e = np.uint64(packed[tabs[j], state & mask])
                    v = np.int64(e >> np.uint64(2 * SCALE_BITS))
                    state = ((e >> np.uint64(SCALE_BITS)) & mask) * (state >> np.uint64(SCALE_BITS)) + (
                        e & mask
                    )
                    if state < low:
                        if p >= end:
                            return r, 1
                        state = (state << np.uint64(16)) | _word(data, p)
                        p += 2
                    if v == last:  # escaped: two uniform 16-bit words, low first
                        v = np.int64(0)
                        for b in range(2):
                            v |= np.int64(state & np.uint64(0xFFFF)) << (16 * b)
                            state >>= np.uint64(16)
                            if state < low:
                                if p >= end:
                                    return r, 1
                                state = (state << np.uint64(16)) | _word(data, p)
                                p += 2
                    d = (v >> 1) ^ -(v & 1)  # zigzag back
                    q = base + j
                    if i > 0:  # _predict, with W carried in a register
                        pn = np.int64(x[q - w])
                        if j > 0:
                            pnw = np.int64(x[q - w - 1])
                        else:
                            pw = pn
                            pnw = pn
                        pred = _median(pw, pn, pnw)
                    else:
                        pred = pw
                    c = pred + d
                    outside |= (c < 0) | (c > top)
                    res[q] = d
                    x[q] = c
                    pw = c
        if outside:
            return r, 3
        if state != low:
            return r, 4
        if p != end:
            return r, 5
    return -1, 0


_REASONS = {
    1: "the stream ends early",
    2: "the stream's first state is out of range",
    3: "a code falls outside the code type's range",
    4: "the stream's last state is not the start state",
    5: "bytes follow the stream's end",
}


# ---- the Python side -----------------------------------------------------------------------


def _grid(codes: np.ndarray, width: int) -> np.ndarray:
    """(N, A, P) -> (N, A, P // width, width)."""
    n, a, p = codes.shape
    if width < 1 or p % width:
        raise ValueError(f"{p} positions do not make rows of width {width}")
    return codes.reshape(n, a, p // width, width)


def fit(groups: Sequence[tuple[np.ndarray, int]]) -> CtxModel:
    """Tables from calibration codes: ``groups`` of ((N, A, P) codes, latent width)."""
    grids = [_grid(np.asarray(c), w) for c, w in groups if np.asarray(c).size]
    if not grids:
        raise ValueError("no calibration codes to fit a context model on")
    a = grids[0].shape[1]
    flat = np.concatenate([g.transpose(1, 0, 2, 3).reshape(a, -1) for g in grids], axis=1)
    centers = np.rint(np.median(flat, axis=1)).astype(np.int64)
    feats = []
    for grid in grids:
        res = np.zeros(grid.shape, dtype=np.int64)
        act = np.zeros(grid.shape, dtype=np.int64)
        tab = np.zeros(grid.shape, dtype=np.int64)
        # with every activity in bucket 0, a table number is k * GROUPS * SIGNS + the sign class
        _features(grid.astype(np.int64), centers, np.zeros((a, ACT_MAX + 1), dtype=np.uint8), res, act, tab)
        sgn = tab % SIGNS
        feats.append([x.transpose(1, 0, 2, 3).reshape(a, -1) for x in (res, act, sgn)])
    res, act, sgn = (np.concatenate([f[i] for f in feats], axis=1) for i in range(3))
    sym = np.where(res >= 0, 2 * res, -2 * res - 1)
    act = np.minimum(act, ACT_MAX)
    sizes = np.minimum(sym.max(axis=1) + 2, MAX_ALPHABET).astype(np.int64)
    width = int(sizes.max())
    edges = np.zeros((a, GROUPS - 1), dtype=np.int64)
    freqs = np.zeros((a * GROUPS * SIGNS, width), dtype=np.int64)
    for k in range(a):
        qs = np.quantile(act[k], np.arange(1, GROUPS) / GROUPS, method="lower")
        edges[k] = np.maximum.accumulate(qs.astype(np.int64))
        bucket = np.searchsorted(edges[k], act[k], side="left")
        esc = sizes[k] - 1
        s = np.minimum(sym[k], esc)  # symbols past the table are escaped
        channel = np.bincount(s, minlength=sizes[k]).astype(np.float64)
        channel /= channel.sum()
        for g in range(GROUPS):
            for sg in range(SIGNS):
                sel = (bucket == g) & (sgn[k] == sg)
                counts = np.bincount(s[sel], minlength=sizes[k]).astype(np.float64)
                freqs[(k * GROUPS + g) * SIGNS + sg, : sizes[k]] = _quantize(counts, channel)
    return CtxModel(centers, edges, sizes, freqs)


def _quantize(counts: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Counts (+ a little of the channel's distribution) -> frequencies summing to
    2**SCALE_BITS, every symbol seen here at least 1, the escape (last) at least 1."""
    total = 1 << SCALE_BITS
    p = counts + _PRIOR * channel
    p = p / p.sum()
    f = np.floor(p * total).astype(np.int64)
    f[(counts > 0) & (f == 0)] = 1
    f[-1] = max(f[-1], 1)
    # hand the remainder (or take the excess) at the symbols that lose least by it
    while f.sum() != total:
        diff = total - int(f.sum())
        if diff > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = np.where(p > 0, p * np.log2((f + 1) / np.maximum(f, 1)), -1.0)
            gain[f == 0] = np.where(p[f == 0] > 0, np.inf, -1.0)
            f[int(np.argmax(gain))] += 1
        else:
            floor = np.ones_like(f)
            floor[(counts == 0) & (np.arange(f.size) != f.size - 1)] = 0
            with np.errstate(divide="ignore", invalid="ignore"):  # f == 0 lanes are masked out
                loss = np.where(f > floor, p * np.log2(f / np.maximum(f - 1, 1)), np.inf)
            loss[(f - 1 == 0) & (f > floor)] = np.inf
            f[int(np.argmin(loss))] -= 1
    return f


class CtxCoder:
    """Encode and decode rows with one fitted model (thread-safe: the loops release the GIL
    and keep no state between calls)."""

    def __init__(self, model: CtxModel) -> None:
        self.model = model
        self._t = _tables(model)

    def encode(self, codes: np.ndarray, width: int) -> list[bytes]:
        """(N, A, P) integer codes, rows of ``width`` positions -> N streams."""
        grid = _grid(codes, width)
        if grid.shape[1] != self.model.channels:
            raise ValueError(f"{grid.shape[1]} channels of codes, the model has {self.model.channels}")
        n = grid.shape[0]
        out = np.empty(max(grid[0].size * 2 + 64, 256) * max(n, 1), dtype=np.uint8)
        grid = grid.astype(np.int64, copy=False)
        ends = np.zeros(n, dtype=np.int64)
        t = self._t
        while not _encode(grid, t.centers, t.buckets, t.sizes, t.freqs, t.cums, out, ends):
            out = np.empty(out.size * 4, dtype=np.uint8)
        data = out.tobytes()
        starts = [0, *ends[:-1].tolist()]
        return [data[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]

    def decode(
        self, streams: Sequence[bytes], channels: int, positions: int, width: int, dtype: np.dtype
    ) -> np.ndarray:
        """N streams of rows shaped (channels, positions) -> (N, channels, positions) codes of
        ``dtype``; ValueError (with ``.row``, the index of the first bad stream) otherwise."""
        if channels != self.model.channels:
            raise RowError(0, f"{channels} stored channels, the model has {self.model.channels}")
        if width < 1 or positions % width:
            raise RowError(0, f"{positions} positions do not make rows of width {width}")
        n = len(streams)
        lengths = np.fromiter((len(s) for s in streams), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        data = np.frombuffer(b"".join(streams), dtype=np.uint8)
        out = np.empty((n, channels, positions // width, width), dtype=dtype)
        t = self._t
        top = int(np.iinfo(dtype).max)
        bad, reason = _decode(data, starts, ends, t.centers, t.buckets, t.sizes, t.packed, top, out)
        if bad >= 0:
            raise RowError(int(bad), _REASONS[int(reason)])
        return out.reshape(n, channels, positions)


class RowError(ValueError):
    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row
