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

Before that, where the channels move together (model version 2), each channel's codes are
coded less a linear prediction from the earlier channels' codes at the same position, fitted
by least squares on the calibration codes' residuals (``_fit_lift``) and put back after a
row is decoded (``_unlift_row``, before its codes are checked). On an SD-layout VAE's
latents (4 channels, correlated at 0.6-0.98) it took the coder from 4.57 to 3.88 bits a value
at 1% latent error, 7.15 to 6.16 at 0.2% (4 x 32 x 32 latents of 256 x 256 photo tiles).

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
which Python could not do at a useful speed. Where the decoder's time went, and what took
it from 136-146 MB/s to about 210 (numba variants on the same photo codes, one core of
this 2.6 GHz machine, 2026-11-29/30): the loop ran about 85 instructions a symbol, a third
of them numba's test of every signed index for a negative value and reloads of values
spilled to the stack, so it was bound by instructions, not by the rANS chain (3.9 ns a
symbol alone). Unsigned positions (no index tests), a packed slot that holds the residual
itself (no zigzag), an escape test that calls out (written in, numba reference-counted the
words array every symbol) and codes kept as int64 and checked against the code type once a
row cut it to about 47; then two rows decoded side by side, each with its own state, keep
the core busy while one chain waits (three or four rows were no faster: registers run
out; their scratch arrays are passed in: allocated inside the loop's function they cost a
fifth of its speed). A branch-free renormalisation alone gained nothing, nor did 9- or 8-bit frequencies
(smaller tables), int32 buffers, or working out the next line's tables inside the symbol
loop. Two interleaved states per row would change the format for 7-10% more.
"""

from __future__ import annotations

import functools
import io
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
VERSIONS = (1, 2)  # a model is version 2 where it predicts channels from each other (``fit``)
LIFT_BITS = 8  # channel prediction weights are in units of 2**-LIFT_BITS
MAX_WEIGHT = 1 << 16  # |weight| a stored model may declare (256.0)
MAX_BIAS = 1 << 40
# What a stored model may declare, checked before anything is built from it: a latent has a
# few to a few dozen channels (SD 4, FLUX 16, DC-AE 32-128), and a model of 256 channels of
# full tables holds about 4.7 M entries of one or two bytes
MAX_CHANNELS = 256
MAX_MODEL_BYTES = 16 << 20
_L = 1 << 23  # rANS state interval [L, 256 L)
_PRIOR = 2.0  # pseudo-counts a context borrows from its channel's distribution
_RES_SHIFT = 2 * SCALE_BITS + 1  # a packed slot's residual, above its frequency and offset


@dataclass(frozen=True)
class CtxModel:
    """The fitted tables. ``freqs`` is (A * GROUPS * SIGNS, K) with K the largest alphabet;
    table ``(k * GROUPS + g) * SIGNS + s``'s last used entry, ``sizes[k] - 1``, is the escape."""

    centers: np.ndarray  # (A,) int64: the value a row's first position is predicted as
    edges: np.ndarray  # (A, GROUPS - 1) int64, ascending: bucket = how many edges < activity
    sizes: np.ndarray  # (A,) int64: each channel's table length, escape included
    freqs: np.ndarray  # (A * GROUPS * SIGNS, K) int64
    # channel prediction (version 2; None in version 1): channel k's codes are coded less
    # (bias[k] + weights[k, :k] . codes[:k]) >> LIFT_BITS, the earlier channels' codes at
    # the same position (``lift``); weights (A, A) strictly lower triangular, bias (A,)
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return len(self.centers)

    @property
    def version(self) -> int:
        return 1 if self.weights is None else 2

    def lift(self, codes: np.ndarray) -> np.ndarray:
        """(N, A, ...) int64 codes -> what the context coder codes: each channel less its
        prediction from the earlier channels' codes (the codes themselves in version 1)."""
        if self.weights is None or self.bias is None:
            return codes
        return _lift(codes, self.weights, self.bias)

    def lift_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The channel prediction as the decoder puts it back: each channel's picked earlier
        channels (A, PREDICTORS), their weights, how many it has (0: none; all in version 1),
        and its bias."""
        a = self.channels
        picks = np.zeros((a, PREDICTORS), dtype=np.int64)
        weights = np.zeros((a, PREDICTORS), dtype=np.int64)
        counts = np.zeros(a, dtype=np.int64)
        bias = np.zeros(a, dtype=np.int64) if self.bias is None else np.asarray(self.bias, dtype=np.int64)
        if self.weights is not None:
            for k in range(a):
                (js,) = np.nonzero(self.weights[k])
                counts[k] = len(js)
                picks[k, : len(js)], weights[k, : len(js)] = js, self.weights[k, js]
        return picks, weights, counts, bias

    def to_bytes(self) -> bytes:
        """The model as FORMAT.md stores it: a zstd frame of unsigned LEB128 varints."""
        out = bytearray([self.version, SCALE_BITS, GROUPS, SIGNS])
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
        if self.weights is not None and self.bias is not None:
            for k in range(1, self.channels):
                _varint(out, _zigzag(int(self.bias[k])))
                for wt in self.weights[k, :k]:
                    _varint(out, _zigzag(int(wt)))
        return zstandard.ZstdCompressor(level=19).compress(bytes(out))

    @classmethod
    def from_bytes(cls, data: bytes) -> CtxModel:
        """Parse and check a stored model; ValueError names what is wrong. Parsed once per
        content (about a millisecond each: opening an archive file asks three times, and a
        job opens every file with the same model); its arrays are read-only."""
        return _parse_model(bytes(data))

    @classmethod
    def _parse(cls, data: bytes) -> CtxModel:
        raw = _raw(data)
        version = raw[0]
        vals = _varints(raw, 4)
        a = int(vals[0]) if len(vals) else 0
        if not 0 < a <= MAX_CHANNELS:
            raise ValueError(f"context model has {a} channels (at most {MAX_CHANNELS})")
        centers, sizes, edges, tables = [], [], [], []
        pos = 1
        for _ in range(a):
            if pos + 2 + GROUPS - 1 > len(vals):
                raise ValueError("context model is truncated")
            centers.append(int(vals[pos]))
            size = int(vals[pos + 1])
            if not 1 <= size <= MAX_ALPHABET:
                raise ValueError(f"context model table of {size} symbols")
            sizes.append(size)
            edges.append(vals[pos + 2 : pos + 1 + GROUPS].astype(np.int64))
            pos += 1 + GROUPS
            if pos + GROUPS * SIGNS * size > len(vals):
                raise ValueError("context model is truncated")
            tables.append(vals[pos : pos + GROUPS * SIGNS * size].reshape(GROUPS * SIGNS, size))
            pos += GROUPS * SIGNS * size
        weights = bias = None
        if version == 2:
            lifts = a * (a + 1) // 2 - 1  # per channel k > 0: a bias and k weights
            if pos + lifts > len(vals):
                raise ValueError("context model is truncated")
            signed = _zigzag_back(vals[pos : pos + lifts])
            pos += lifts
            weights, bias = np.zeros((a, a), dtype=np.int64), np.zeros(a, dtype=np.int64)
            at = 0
            for k in range(1, a):
                bias[k] = signed[at]
                weights[k, :k] = signed[at + 1 : at + 1 + k]
                at += 1 + k
            if np.abs(weights).max() > MAX_WEIGHT or np.abs(bias).max() > MAX_BIAS:
                raise ValueError("context model channel prediction out of range")
            if ((weights != 0).sum(axis=1) > PREDICTORS).any():
                raise ValueError(f"context model predicts a channel from more than {PREDICTORS} channels")
        if pos != len(vals):
            raise ValueError("context model has trailing bytes")
        width = max(sizes)
        freqs = np.zeros((a * GROUPS * SIGNS, width), dtype=np.int64)
        for k, tab in enumerate(tables):
            sums, last = tab.sum(axis=1), tab[:, -1]
            bad = np.flatnonzero((sums != 1 << SCALE_BITS) | (last < 1))
            if len(bad):
                i = k * GROUPS * SIGNS + int(bad[0])
                raise ValueError(f"context model table {i} does not sum to {1 << SCALE_BITS} with an escape")
            freqs[k * GROUPS * SIGNS : (k + 1) * GROUPS * SIGNS, : sizes[k]] = tab
        e = np.asarray(edges, dtype=np.int64).reshape(a, GROUPS - 1)
        if np.any(np.diff(e, axis=1) < 0):
            raise ValueError("context model bucket edges are not ascending")
        model = cls(
            np.asarray(centers, dtype=np.int64), e, np.asarray(sizes, dtype=np.int64), freqs, weights, bias
        )
        for arr in (model.centers, model.edges, model.sizes, model.freqs, weights, bias):
            if arr is not None:
                arr.flags.writeable = False
        return model


def _lift(codes: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    out = codes.copy()
    for k in range(1, codes.shape[1]):
        out[:, k] -= _prediction(codes, weights[k, :k], int(bias[k]))
    return out


def _prediction(codes: np.ndarray, weights: np.ndarray, bias: int) -> np.ndarray:
    """(bias + weights . codes[:, :k]) >> LIFT_BITS at every position (floor division)."""
    acc = np.full(codes.shape[:1] + codes.shape[2:], bias, dtype=np.int64)
    for j, wt in enumerate(weights.tolist()):
        if wt:
            acc += wt * codes[:, j]
    return acc >> LIFT_BITS


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _raw(data: bytes) -> bytes:
    """A stored model's varint bytes, decompressed no further than ``MAX_MODEL_BYTES`` and
    with the header checked."""
    # read as a stream: a frame that declares its content size is otherwise inflated whole,
    # whatever max_output_size says
    chunks, size = [], 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            while chunk := reader.read(1 << 20):
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise ValueError(f"context model does not decompress (past {MAX_MODEL_BYTES:,} bytes)")
                chunks.append(chunk)
    except zstandard.ZstdError as err:
        raise ValueError(f"context model does not decompress ({err})") from err
    raw = b"".join(chunks)
    if len(raw) < 4 or raw[0] not in VERSIONS or raw[1:4] != bytes([SCALE_BITS, GROUPS, SIGNS]):
        raise ValueError(
            f"context model header {list(raw[:4])} is not (1 or 2, {SCALE_BITS}, {GROUPS}, {SIGNS})"
        )
    return raw


def _varints(raw: bytes, start: int) -> np.ndarray:
    """The unsigned LEB128 varints of ``raw[start:]``, all at once (int64)."""
    b = np.frombuffer(raw, dtype=np.uint8)[start:]
    if not len(b):
        raise ValueError("context model is truncated")
    ends = np.flatnonzero(b < 0x80)
    if not len(ends) or ends[-1] != len(b) - 1:
        raise ValueError("context model is truncated")
    begins = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - begins + 1
    if lengths.max() > 9:  # past 63 bits
        raise ValueError("context model is truncated")
    group = np.repeat(np.arange(len(ends)), lengths)
    shift = ((np.arange(len(b)) - begins[group]) * 7).astype(np.uint64)
    out = np.zeros(len(ends), dtype=np.uint64)
    np.add.at(out, group, (b & 0x7F).astype(np.uint64) << shift)
    if np.any(out > np.iinfo(np.int64).max):
        raise ValueError("context model value out of range")
    return out.astype(np.int64)


def declared_channels(data: bytes) -> int:
    """The channels a stored model declares, read from its header alone (no tables built):
    what a reader checks against the quantizer before it trusts the rest. Once per content:
    a footer read asks twice (its codec parameters, then the quantizer's channels)."""
    return _declared_channels(bytes(data))


@functools.lru_cache(maxsize=4)
def _declared_channels(data: bytes) -> int:
    raw = _raw(data)
    b, value = raw[4:], 0
    for i, byte in enumerate(b[:10]):
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if not 0 < value <= MAX_CHANNELS:
                raise ValueError(f"context model has {value} channels (at most {MAX_CHANNELS})")
            return value
    raise ValueError("context model is truncated")


@functools.lru_cache(maxsize=4)
def _parse_model(data: bytes) -> CtxModel:
    return CtxModel._parse(data)


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_varints(values: Sequence[int]) -> bytes:
    """Unsigned LEB128 varints, as a stored model holds them (for crafting models by hand)."""
    out = bytearray()
    for v in values:
        _varint(out, v)
    return bytes(out)


@dataclass(frozen=True)
class _Tables:
    """The model as the compiled loops use it."""

    centers: np.ndarray
    buckets: np.ndarray  # (A, ACT_MAX + 1) uint8
    sizes: np.ndarray
    freqs: np.ndarray  # (T, K) uint32
    cums: np.ndarray  # (T, K) uint32
    packed: np.ndarray  # (T * 2**SCALE_BITS,) int32: residual, frequency, offset (``_tables``)
    escapes: np.ndarray  # (A,) int64: the residual ``packed`` gives a channel's escape
    lift: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # ``CtxModel.lift_tables``


def _zigzag_back(v: np.ndarray) -> np.ndarray:
    return (v >> 1) ^ -(v & 1)


def _tables(model: CtxModel) -> _Tables:
    act = np.arange(ACT_MAX + 1)
    buckets = np.stack([np.searchsorted(e, act, side="left") for e in model.edges]).astype(np.uint8)
    freqs = model.freqs.astype(np.uint32)
    cums = (np.cumsum(freqs, axis=1) - freqs).astype(np.uint32)
    slots = np.stack([np.repeat(np.arange(f.size, dtype=np.int64), f) for f in model.freqs])
    # per slot, one signed word: the residual its symbol stands for (zigzag undone, so the
    # decoder does not), the symbol's frequency (up to 2**SCALE_BITS: 11 bits) and the
    # slot's offset in it
    f = np.take_along_axis(model.freqs, slots, axis=1)
    bias = np.arange(1 << SCALE_BITS)[None, :] - np.take_along_axis(cums.astype(np.int64), slots, axis=1)
    packed = (_zigzag_back(slots) << _RES_SHIFT) + (f << SCALE_BITS) + bias
    escapes = _zigzag_back(model.sizes - 1)
    flat = packed.astype(np.int32).ravel()
    return _Tables(model.centers, buckets, model.sizes, freqs, cums, flat, escapes, model.lift_tables())


# ---- the compiled loops ------------------------------------------------------------------
#
# A row's codes and residuals are flat arrays of (A, H, W) in C order: position (k, i, j) is
# ``(k * h + i) * w + j``. A line's tables depend only on the line above and the channel
# before, so they are worked out for the whole line first and the sequential part, one
# symbol after another, is left with the rANS step and the prediction; tables that also
# looked at the left neighbour (4% smaller on the demo photo codes) would put the context
# work on that sequential path. The rANS state is 32 bits, in [2**16, 2**32), renormalised
# 16 bits at a time (at most once a symbol, as SCALE_BITS <= 16), words little-endian.
#
# Positions are unsigned (uint64) wherever the loops index with them: numba tests every
# signed index for a negative value, which in the decoder cost more than the rANS step.

_LOW = 1 << 16


@numba.njit(inline="always")
def _contexts(x, res, up, prev, w, sg, tk, bk, scale, tabs, acts):  # pragma: no cover - compiled
    """Tables (and activities) of a line: the line above starts at ``up``, the same line of
    the channel before at ``prev`` (its signs count when ``sg`` is 1); ``tk`` is the
    channel's first table, ``bk`` its activity-to-bucket table. Each table is written times
    ``scale`` (the decoder indexes one flat array of tables)."""
    n0 = np.int64(x[up])
    r0 = abs(res[up])
    nl = n0
    rl = r0
    for j in range(w):  # NW, N, NE rolled along the line above; edges repeat
        jr = up + np.uint64(j + 1 if j + 1 < w else j)
        nr = np.int64(x[jr])
        rr = abs(res[jr])
        activity = min(abs(n0 - nl) + abs(nr - n0) + rl + r0 + rr, ACT_MAX)
        d = res[prev + np.uint64(j)] * sg
        acts[j] = activity
        tabs[j] = np.uint64((tk + bk[activity] * SIGNS + (d > 0) - (d < 0)) * scale)
        nl = n0
        rl = r0
        n0 = nr
        r0 = rr


@numba.njit(inline="always")
def _first_contexts(res, prev, w, sg, tk, bk, scale, tabs, acts):  # pragma: no cover - compiled
    """Tables of a channel's first line: no line above, activity 0."""
    for j in range(w):
        d = res[prev + np.uint64(j)] * sg
        acts[j] = 0
        tabs[j] = np.uint64((tk + bk[0] * SIGNS + (d > 0) - (d < 0)) * scale)


@numba.njit(inline="always")
def _line(x, res, k, i, w, hw, bk, scale, tabs, acts):  # pragma: no cover - compiled
    """Tables (and activities) of line i of channel k, for the encoder and ``fit``."""
    base = np.uint64((k * (hw // w) + i) * w)
    prev = base - np.uint64(hw) if k > 0 else base  # k == 0: no channel before, sign term 0
    sg = 1 if k > 0 else 0
    tk = k * GROUPS * SIGNS + 1
    if i > 0:
        _contexts(x, res, base - np.uint64(w), prev, w, sg, tk, bk, scale, tabs, acts)
    else:
        _first_contexts(res, prev, w, sg, tk, bk, scale, tabs, acts)


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
                _line(x, rr, k, i, w, hw, buckets[k], 1, tr[base : base + w], ar[base : base + w])
                _residuals(x, i, w, base, centers[k], rr)


@numba.njit(inline="always")
def _flush(state, tmp, p, out, pos):  # pragma: no cover - compiled
    """A row's stream, ended: the final state (written first) and the words before it, copied
    to ``out`` at ``pos`` as little-endian bytes; the position after it, or -1 where ``out``
    has no room."""
    p -= 2
    tmp[p] = np.uint16(state & np.uint64(0xFFFF))
    tmp[p + 1] = np.uint16(state >> np.uint64(16))
    size = 2 * (tmp.size - p)
    if pos + size > out.size:
        return -1
    for b in range(tmp.size - p):
        out[pos + 2 * b] = np.uint8(tmp[p + b] & 0xFF)
        out[pos + 2 * b + 1] = np.uint8(tmp[p + b] >> 8)
    return pos + size


@numba.njit(cache=True, nogil=True)
def _encode(codes, centers, buckets, sizes, freqs, cums, out, ends):  # pragma: no cover
    """(N, A, H, W) int64 codes -> rows' streams, packed into ``out``; row r is
    out[ends[r-1]:ends[r]]. Returns False when ``out`` is too small."""
    n, a, h, w = codes.shape
    hw = h * w
    per = a * hw
    res = np.empty(per, dtype=np.int64)
    act = np.empty(w, dtype=np.int64)
    tabs = np.empty(per, dtype=np.uint64)
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
                _line(x, res, k, i, w, hw, buckets[k], 1, tabs[base : base + w], act)
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
        pos = _flush(state, tmp, p, out, pos)
        if pos < 0:
            return False
        ends[r] = pos
    return True


@numba.njit(inline="always")
def _word(data, p):  # pragma: no cover - compiled
    """The little-endian 16-bit word at byte p."""
    return np.uint64(data[p]) | (np.uint64(data[p + 1]) << np.uint64(8))


@numba.njit(inline="always")
def _step(packed, words, t, state, p):  # pragma: no cover - compiled
    """One symbol under the table at offset t: (its residual, or the channel's escape value;
    the state; the next word). The state is renormalised without a branch (a random branch
    there is mispredicted about a symbol in five), reading a word it may not take: the words
    are padded (``_padding``)."""
    mask = np.uint64((1 << SCALE_BITS) - 1)
    e = np.int64(packed[t + (state & mask)])
    u = np.uint64(e)
    state = ((u >> np.uint64(SCALE_BITS)) & np.uint64((2 << SCALE_BITS) - 1)) * (
        state >> np.uint64(SCALE_BITS)
    ) + (u & mask)
    more = state < np.uint64(_LOW)
    renormed = (state << np.uint64(16)) | np.uint64(words[p])
    return e >> _RES_SHIFT, renormed if more else state, p + np.uint64(more)


@numba.njit
def _escaped(words, state, p):  # pragma: no cover - compiled
    """An escaped residual: two uniform 16-bit words, low first, zigzagged. (Its own call:
    written into ``_step``, the branch left numba reference-counting the words each symbol.)"""
    z = np.int64(0)
    for b in range(2):
        z |= np.int64(state & np.uint64(0xFFFF)) << (16 * b)
        state >>= np.uint64(16)
        if state < np.uint64(_LOW):
            state = (state << np.uint64(16)) | np.uint64(words[p])
            p += np.uint64(1)
    return (z >> 1) ^ -(z & 1), state, p


@numba.njit(inline="always")
def _start(data, starts, ends, r):  # pragma: no cover - compiled
    """Row r's first state, its first and end word, and 0 or why it cannot start."""
    p0 = starts[r]
    end = ends[r]
    state = _word(data, p0) | (_word(data, p0 + 2) << np.uint64(16))  # the padding covers it
    bad = 0
    if end - p0 < 4 or (end - p0) % 2:
        bad = 1
    elif state < np.uint64(_LOW):
        bad = 2
    return state, np.uint64((p0 + 4) // 2), np.uint64(end // 2), bad


@numba.njit(inline="always")
def _unlift_row(x, a, hw, lift):  # pragma: no cover - compiled
    """A decoded row's channel prediction put back in place (model version 2; ``lift``:
    each channel's picked earlier channels, their weights, how many, its bias), channel by
    channel: each uses the channels already put back."""
    picks, weights, counts, bias = lift
    for k in range(a):
        c = counts[k]
        if c == 0:
            continue
        base = k * hw
        for q in range(hw):
            s = bias[k]
            for i in range(c):
                s += weights[k, i] * x[picks[k, i] * hw + q]
            x[base + q] += s >> LIFT_BITS


@numba.njit(inline="always")
def _finish(x, out, top):  # pragma: no cover - compiled
    """A decoded row into ``out`` (the code type); False if a code falls outside it."""
    acc = np.int64(0)  # any code < 0 or > top sets its sign bit
    for q in range(out.size):
        c = x[q]
        acc |= c | (top - c)
        out[q] = c
    return acc >= 0


@numba.njit(cache=True, nogil=True)
def _pair(streams, model, top, out, ra, rb, work, tabs):  # pragma: no cover - compiled
    """Rows ra and rb decoded side by side: each symbol waits on the one before through the
    rANS state, so two rows' chains keep one core twice as busy (three or four rows ran no
    faster: the loop runs out of registers). ra == rb decodes one row. Returns 0, or why a
    row is bad (``_REASONS``; which row, only when ra == rb). ``streams`` and ``model`` are
    ``_decode``'s."""
    data, words, starts, ends = streams
    centers, buckets, escapes, packed, lift = model
    _, a, h, w = out.shape
    hw = h * w
    uw = np.uint64(w)
    size = np.int64(1 << SCALE_BITS)
    xa = work[0]  # codes as int64, checked against the code type at the end
    xb = work[1]
    resa = work[2]
    resb = work[3]
    ta = tabs[0]
    tb = tabs[1]
    acts = tabs[2]
    sa, pa, ea, bad = _start(data, starts, ends, ra)
    if bad:
        return bad
    sb, pb, eb, bad = _start(data, starts, ends, rb)
    if bad:
        return bad
    for k in range(a):
        escape = escapes[k]
        bk = buckets[k]
        tk = k * GROUPS * SIGNS + 1
        sg = 1 if k > 0 else 0
        base = np.uint64(k * hw)
        prev = base - np.uint64(hw) if k > 0 else base
        wa = np.int64(centers[k])  # a channel's first code is predicted as its center
        wb = wa
        up = base
        for i in range(h):
            if i > 0:
                up = base
                base += uw
                prev += uw
                _contexts(xa, resa, up, prev, w, sg, tk, bk, size, ta, acts)
                _contexts(xb, resb, up, prev, w, sg, tk, bk, size, tb, acts)
                wa = xa[up]  # a line's first code: W, N and NW are all N
                wb = xb[up]
            else:
                _first_contexts(resa, prev, w, sg, tk, bk, size, ta, acts)
                _first_contexts(resb, prev, w, sg, tk, bk, size, tb, acts)
            na = wa  # NW, and on the first line N, are W: the median is then W
            nb = wb
            for j in range(w):
                q = base + np.uint64(j)
                da, sa, pa = _step(packed, words, ta[j], sa, pa)
                if da == escape:
                    da, sa, pa = _escaped(words, sa, pa)
                db, sb, pb = _step(packed, words, tb[j], sb, pb)
                if db == escape:
                    db, sb, pb = _escaped(words, sb, pb)
                ua = xa[up + np.uint64(j)] if i > 0 else wa
                ub = xb[up + np.uint64(j)] if i > 0 else wb
                wa = _median(wa, ua, na) + da
                wb = _median(wb, ub, nb) + db
                resa[q] = da
                resb[q] = db
                xa[q] = wa
                xb[q] = wb
                na = ua
                nb = ub
            if pa > ea or pb > eb:  # read past the end (at most 3 words a symbol: the padding)
                return 1
    _unlift_row(xa, a, hw, lift)
    _unlift_row(xb, a, hw, lift)
    if not _finish(xa, out[ra].ravel(), top) or not _finish(xb, out[rb].ravel(), top):
        return 3
    if sa != np.uint64(_LOW) or sb != np.uint64(_LOW):
        return 4
    if pa != ea or pb != eb:
        return 5
    return 0


@numba.njit(cache=True, nogil=True)
def _decode(streams, model, top, out):  # pragma: no cover - compiled
    """Rows' streams -> (N, A, H, W) codes in ``out``, of the code type. ``streams``: the
    rows' bytes, the same as 16-bit words (padded by ``_padding``), each row's first and end
    byte; ``model``: the channels' centers, bucket tables and escape values, and the packed
    tables. Returns (-1, 0), or the first bad row's index and why (``_REASONS``): a pair
    with a bad row in it is decoded again one row at a time."""
    n, a, h, w = out.shape
    work = np.zeros((4, a * h * w), dtype=np.int64)
    tabs = np.zeros((3, w), dtype=np.uint64)
    for r in range(0, n, 2):
        rb = min(r + 1, n - 1)  # an odd row out is decoded beside itself
        if _pair(streams, model, top, out, r, rb, work, tabs):
            for row in range(r, rb + 1):
                bad = _pair(streams, model, top, out, row, row, work, tabs)
                if bad:
                    return row, bad
    return -1, 0


def _padding(width: int) -> int:
    """Bytes after the last stream that a decoder running past a row's end may read before
    the line's end stops it: 3 words a symbol, a line of ``width`` symbols, and the first
    state's 4 bytes."""
    return 6 * width + 4


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


def fit(groups: Sequence[tuple[np.ndarray, int]], predict_channels: bool = True) -> CtxModel:
    """Tables from calibration codes: ``groups`` of ((N, A, P) codes, latent width). Where
    the channels' residuals predict each other (``_fit_lift``; unless ``predict_channels``
    is False), the model (version 2) codes each channel less that prediction."""
    grids = [_grid(np.asarray(c), w).astype(np.int64) for c, w in groups if np.asarray(c).size]
    if not grids:
        raise ValueError("no calibration codes to fit a context model on")
    a = grids[0].shape[1]
    weights, bias = _fit_lift(grids, _centers(grids)) if predict_channels else (None, None)
    if weights is not None and bias is not None:
        grids = [_lift(g, weights, bias) for g in grids]
    centers = _centers(grids)
    feats = [_residual_features(g, centers) for g in grids]
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
    return CtxModel(centers, edges, sizes, freqs, weights, bias)


def _centers(grids: list[np.ndarray]) -> np.ndarray:
    a = grids[0].shape[1]
    flat = np.concatenate([g.transpose(1, 0, 2, 3).reshape(a, -1) for g in grids], axis=1)
    return np.rint(np.median(flat, axis=1)).astype(np.int64)


def _residual_features(grid: np.ndarray, centers: np.ndarray) -> list[np.ndarray]:
    """(residuals, activities, sign classes) of a grid's codes, each (A, N * H * W)."""
    a = grid.shape[1]
    res = np.zeros(grid.shape, dtype=np.int64)
    act = np.zeros(grid.shape, dtype=np.int64)
    tab = np.zeros(grid.shape, dtype=np.int64)
    # with every activity in bucket 0, a table number is k * GROUPS * SIGNS + the sign class
    _features(grid, centers, np.zeros((a, ACT_MAX + 1), dtype=np.uint8), res, act, tab)
    return [x.transpose(1, 0, 2, 3).reshape(a, -1) for x in (res, act, tab % SIGNS)]


LIFT_SAMPLE = 1 << 18  # positions the channel prediction is fitted on, at most
PREDICTORS = 3  # earlier channels a channel is predicted from, at most (what decode costs)
_LIFT_CLIP = 4 << LIFT_BITS  # weights within +-4.0


def _fit_lift(grids: list[np.ndarray], centers: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Channel prediction weights: channel k's residuals (after the neighbours' median
    prediction) regressed on at most ``PREDICTORS`` earlier channels' at the same position,
    picked one at a time by what each takes off (least squares on the residuals' second
    moments, rounded to 2**-LIFT_BITS); a channel keeps its weights only if they take at
    least 10% off its residuals' variance, rounding's noise counted. Applied to the codes,
    not to the residuals: on the SD-layout cache model's codes (4 x 32 x 32 at 1% latent
    error) the coder then stores 3.87 bits a value against 4.57 without, where weights fitted
    on the codes themselves gave 4.16. (None, None) where no channel gains."""
    res = np.concatenate([_residual_features(g, centers)[0] for g in grids], axis=1).astype(np.float64)
    a, m = res.shape
    if a < 2 or m < 16:
        return None, None
    res = res[:, :: max(1, m // LIFT_SAMPLE)]
    res -= res.mean(axis=1, keepdims=True)
    cov = res @ res.T / res.shape[1]
    weights = np.zeros((a, a), dtype=np.int64)
    for k in range(1, a):
        chosen: list[int] = []
        coef = np.zeros(0)
        left = cov[k, k]
        for _ in range(min(PREDICTORS, k)):
            best = None
            for j in set(range(k)) - set(chosen):
                pick = [*chosen, j]
                c = np.linalg.lstsq(cov[np.ix_(pick, pick)], cov[pick, k], rcond=None)[0]
                v = cov[k, k] - cov[pick, k] @ c
                if best is None or v < best[0]:
                    best = (v, j, c)
            assert best is not None
            if best[0] > left - 0.02 * cov[k, k]:
                break
            left, coef = best[0], best[2]
            chosen.append(best[1])
        wt = np.clip(np.rint(coef * (1 << LIFT_BITS)), -_LIFT_CLIP, _LIFT_CLIP).astype(np.int64)
        if chosen:
            err = res[k] - (wt / (1 << LIFT_BITS)) @ res[chosen]
            if err.var() + 0.25 < 0.9 * res[k].var():
                weights[k, chosen] = wt
    if not weights.any():
        return None, None
    bias = (1 << (LIFT_BITS - 1)) - weights @ centers  # predictions around each channel's center
    bias[0] = 0
    return weights, bias


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

    @classmethod
    def for_model(cls, data: bytes) -> CtxCoder:
        """The coder of a stored model, built once per content (its tables take a few
        milliseconds: every archive file of a job carries the same model)."""
        return _coder(bytes(data))

    def encode(self, codes: np.ndarray, width: int) -> list[bytes]:
        """(N, A, P) integer codes, rows of ``width`` positions -> N streams."""
        grid = _grid(codes, width)
        if grid.shape[1] != self.model.channels:
            raise ValueError(f"{grid.shape[1]} channels of codes, the model has {self.model.channels}")
        n = grid.shape[0]
        out = np.empty(max(grid[0].size * 2 + 64, 256) * max(n, 1), dtype=np.uint8)
        grid = self.model.lift(grid.astype(np.int64, copy=False))
        if self.model.weights is not None and grid.size and np.abs(grid).max() >= 1 << 29:
            raise ValueError("codes less their channel prediction fall past 2^29")
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
        joined = b"".join(streams)
        joined += bytes(_padding(width) + len(joined) % 2)
        data = np.frombuffer(joined, dtype=np.uint8)
        words = np.frombuffer(joined, dtype="<u2").astype(np.uint16, copy=False)  # native order
        out = np.empty((n, channels, positions // width, width), dtype=dtype)
        t = self._t
        top = int(np.iinfo(dtype).max)
        model = (t.centers, t.buckets, t.escapes, t.packed, t.lift)
        bad, reason = _decode((data, words, starts, ends), model, top, out)
        if bad >= 0:
            raise RowError(int(bad), _REASONS[int(reason)])
        return out.reshape(n, channels, positions)


@functools.lru_cache(maxsize=4)
def _coder(data: bytes) -> CtxCoder:
    return CtxCoder(CtxModel.from_bytes(data))


class RowError(ValueError):
    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


# ---- coding under given tables (the learned codec: pipeline.codec.learned) ---------------
#
# A learned codec chooses each value's table itself (a latent channel's prior, or the scale
# its hyperprior predicted), so these loops take one table index per value and no context.
# Tables are 12-bit (finer than the context tables': a learned prior can put 99% on one
# symbol), each ``lows[t] + symbol`` for symbols ``0 ... sizes[t] - 2``, the last symbol the
# escape, sent as in the rows above. The state runs from 2**16 and must come back to it at a
# row's end with every word used: a stream cut short or run on is caught there.

GIVEN_BITS = 12
_GIVEN_MASK = (1 << GIVEN_BITS) - 1


@numba.njit(cache=True, nogil=True)
def _encode_given(values, tabs, row_ends, lows, sizes, freqs, cums, out, ends):  # pragma: no cover
    """Rows of values, each under its table -> the rows' streams packed into ``out``, row r
    ending at ``ends[r]``. Returns False when ``out`` is too small."""
    longest = 0
    begin = 0
    for r in range(row_ends.size):
        longest = max(longest, row_ends[r] - begin)
        begin = row_ends[r]
    tmp = np.empty(longest * 3 + 2, dtype=np.uint16)
    begin = 0
    pos = 0
    for r in range(row_ends.size):
        state = np.uint64(_LOW)
        p = tmp.size
        for q in range(row_ends[r] - 1, begin - 1, -1):
            t = tabs[q]
            top = sizes[t] - 1
            s = values[q] - lows[t]
            if s < 0 or s >= top or freqs[t, s] == 0:
                v = values[q]
                z = 2 * v if v >= 0 else -2 * v - 1
                for b in range(1, -1, -1):  # two uniform 16-bit words, decoded low word first
                    if state >= np.uint64(_LOW):
                        p -= 1
                        tmp[p] = np.uint16(state & np.uint64(0xFFFF))
                        state >>= np.uint64(16)
                    state = (state << np.uint64(16)) + np.uint64((z >> (16 * b)) & 0xFFFF)
                s = top
            f = np.uint64(freqs[t, s])
            if state >= (np.uint64(_LOW >> GIVEN_BITS) << np.uint64(16)) * f:
                p -= 1
                tmp[p] = np.uint16(state & np.uint64(0xFFFF))
                state >>= np.uint64(16)
            state = ((state // f) << np.uint64(GIVEN_BITS)) + (state % f) + np.uint64(cums[t, s])
        pos = _flush(state, tmp, p, out, pos)
        if pos < 0:
            return False
        ends[r] = pos
        begin = row_ends[r]
    return True


@numba.njit
def _given_escape(words, state, p, last):  # pragma: no cover - compiled
    """An escaped value: two uniform 16-bit words, low first, zigzagged (its own call, as
    ``_escaped``); a word past the stream's end is read as the last word and counted."""
    z = np.int64(0)
    for b in range(2):
        z |= np.int64(state & np.uint64(0xFFFF)) << (16 * b)
        state >>= np.uint64(16)
        if state < np.uint64(_LOW):
            state = (state << np.uint64(16)) | np.uint64(words[min(p, last)])
            p += np.uint64(1)
    return (z >> 1) ^ -(z & 1), state, p


@numba.njit(inline="always")
def _given_step(packed, words, t, state, p, last):  # pragma: no cover - compiled
    """One symbol under table t: (its packed entry, the state, the next word). Renormalised
    without a branch; a word past the end of ``words`` is read as its last and still
    counted, so a stream that runs on is caught at its row's end (p beyond the row's end)."""
    e = packed[(t << np.uint64(GIVEN_BITS)) | (state & np.uint64(_GIVEN_MASK))]
    u = np.uint64(e)
    state = ((u >> np.uint64(GIVEN_BITS)) & np.uint64(0x1FFF)) * (state >> np.uint64(GIVEN_BITS)) + (
        u & np.uint64(_GIVEN_MASK)
    )
    more = state < np.uint64(_LOW)
    renormed = (state << np.uint64(16)) | np.uint64(words[min(p, last)])
    return e, renormed if more else state, p + np.uint64(more)


@numba.njit(inline="always")
def _given_value(packed, words, tabs, base, top, out, q, state, p, last):  # pragma: no cover
    """Value q decoded into ``out`` under table ``base + tabs[q]``: (the state, the next
    word, whether that table exists: ``top`` is their count; a negative index wraps past it)."""
    t = np.uint64(base + np.int64(tabs[q]))
    ok = t < top
    e, state, p = _given_step(packed, words, t if ok else np.uint64(0), state, p, last)
    if (e >> 25) & 1:
        out[q], state, p = _given_escape(words, state, p, last)
    else:
        out[q] = e >> 26
    return state, p, ok


@numba.njit(inline="always")
def _given_start(words, starts, ends, r, states, nexts):  # pragma: no cover - compiled
    """Row r's first state, its next word, its end word, and whether it cannot start: read
    from the stream's head, or where an earlier part of the row stopped (``states[r]`` not 0;
    a state is never below 2**16)."""
    bad = ends[r] - starts[r] < 4 or (ends[r] - starts[r]) % 2 != 0 or starts[r] % 2 != 0
    if states[r] != 0:
        return states[r], nexts[r], np.uint64(ends[r] // 2), bad
    p = np.uint64(starts[r] // 2)
    state = np.uint64(words[p]) | (np.uint64(words[p + np.uint64(1)]) << np.uint64(16))
    return state, p + np.uint64(2), np.uint64(ends[r] // 2), bad or state < np.uint64(_LOW)


@numba.njit(inline="always")
def _given_end(state, p, end, finish):  # pragma: no cover - compiled
    """Whether a row's part ended well: at the row's end, the state back at 2**16 with every
    word used (``finish``); else within the stream (the next part resumes there)."""
    return (p == end and state == np.uint64(_LOW)) if finish else p <= end


@numba.njit(cache=True, nogil=True)
def _given_pair(
    words, starts, ends, tabs, base, row_ends, packed, out, ra, rb, states, nexts, finish
):  # pragma: no cover
    """Rows ra and rb decoded side by side (their common length, then the longer one's
    rest): each symbol waits on the one before through its row's state, and two rows' chains
    keep the core busy (1.5-1.7x one row's speed). ra == rb decodes one row. 0 if both decode
    exactly, 1 if either does not, 2 if a value names a table that does not exist. A row's
    part starts and (``finish`` False) stops where ``states`` and ``nexts`` say
    (``_given_start``, ``_given_end``)."""
    last = np.uint64(words.size - 1)
    top = np.uint64(packed.size >> GIVEN_BITS)
    sa, pa, ea, bad_a = _given_start(words, starts, ends, ra, states, nexts)
    sb, pb, eb, bad_b = _given_start(words, starts, ends, rb, states, nexts)
    if bad_a or bad_b:
        return 1
    known = True
    qa = np.uint64(row_ends[ra - 1] if ra > 0 else 0)
    qb = np.uint64(row_ends[rb - 1] if rb > 0 else 0)
    end_a = np.uint64(row_ends[ra])
    end_b = np.uint64(row_ends[rb])
    for _ in range(min(end_a - qa, end_b - qb)):
        sa, pa, ok_a = _given_value(packed, words, tabs, base, top, out, qa, sa, pa, last)
        sb, pb, ok_b = _given_value(packed, words, tabs, base, top, out, qb, sb, pb, last)
        known &= ok_a & ok_b
        qa += np.uint64(1)
        qb += np.uint64(1)
    while qa < end_a:
        sa, pa, ok_a = _given_value(packed, words, tabs, base, top, out, qa, sa, pa, last)
        known &= ok_a
        qa += np.uint64(1)
    while qb < end_b:
        sb, pb, ok_b = _given_value(packed, words, tabs, base, top, out, qb, sb, pb, last)
        known &= ok_b
        qb += np.uint64(1)
    if not known:
        return 2
    if not (_given_end(sa, pa, ea, finish) and _given_end(sb, pb, eb, finish)):
        return 1
    if not finish:  # only a pair that ended well says where its rows resume
        states[ra], nexts[ra], states[rb], nexts[rb] = sa, pa, sb, pb
    return 0


@numba.njit(cache=True, nogil=True)
def _decode_given(
    words, starts, ends, tabs, base, row_ends, packed, out, states, nexts, finish
):  # pragma: no cover
    """Rows' streams (16-bit words; row r from byte ``starts[r]`` to ``ends[r]``) -> their
    values in ``out``, value q under table ``base + tabs[q]``; each row from its stream's
    head or from where ``states``/``nexts`` say an earlier part stopped, and to its stream's
    end (``finish``) or to a stop they then record (``_given_pair``). Returns (-1, 0), or the first
    row whose stream does not decode exactly and 1, or one with a value under a table that
    does not exist and 2 (a pair with a bad row in it is decoded again a row at a time).
    ``packed[(t << GIVEN_BITS) | slot]`` holds the value table t's slot stands for (above
    bit 26), whether it is the escape (bit 25), the symbol's frequency and the slot's offset
    in it: one load a symbol. Positions and tables are unsigned: numba tests a signed index
    for a negative value at every use."""
    n = row_ends.size
    for r in range(0, n, 2):
        rb = min(r + 1, n - 1)  # an odd row out is decoded beside itself
        args = (states, nexts, finish)
        if _given_pair(words, starts, ends, tabs, base, row_ends, packed, out, r, rb, *args):
            for row in range(r, rb + 1):
                why = _given_pair(words, starts, ends, tabs, base, row_ends, packed, out, row, row, *args)
                if why:
                    return row, why
    return -1, 0


class GivenTables:
    """Integer tables for ``_encode_given``/``_decode_given``: ``freqs`` (T, K), each row
    summing to 2**GIVEN_BITS with its escape (at ``sizes[t] - 1``) at least 1."""

    def __init__(self, lows: np.ndarray, sizes: np.ndarray, freqs: np.ndarray) -> None:
        freqs = np.asarray(freqs, dtype=np.int64)
        self.lows = np.asarray(lows, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        n, k = freqs.shape
        if len(self.lows) != n or len(self.sizes) != n or (self.sizes < 1).any() or (self.sizes > k).any():
            raise ValueError("a low and a size per table, sizes within the tables' width")
        if (freqs < 0).any() or (freqs.sum(1) != 1 << GIVEN_BITS).any():
            raise ValueError(f"each table's frequencies must sum to 2**{GIVEN_BITS}")
        if (freqs[np.arange(n), self.sizes - 1] < 1).any():
            raise ValueError("every table needs room for its escape")
        self.freqs = freqs.astype(np.uint32)
        self.cums = (np.cumsum(freqs, axis=1) - freqs).astype(np.uint32)
        slots = np.stack([np.repeat(np.arange(k, dtype=np.int64), f) for f in freqs])
        f = np.take_along_axis(freqs, slots, axis=1)
        cums = self.cums.astype(np.int64)
        bias = np.arange(1 << GIVEN_BITS)[None, :] - np.take_along_axis(cums, slots, axis=1)
        escape = (slots == (self.sizes - 1)[:, None]).astype(np.int64)
        values = self.lows[:, None] + slots  # the value each slot stands for (int64: << 26 fits)
        self.packed = ((values << 26) | (escape << 25) | (f << GIVEN_BITS) | bias).ravel()

    def encode(self, values: np.ndarray, tabs: np.ndarray, row_ends: np.ndarray) -> list[bytes]:
        values = np.ascontiguousarray(values, dtype=np.int64)
        if values.size and (np.abs(values) >= 1 << 31).any():
            raise ValueError("a value beyond 2^31 cannot be coded")
        tabs = np.ascontiguousarray(tabs, dtype=np.int64)
        row_ends = np.ascontiguousarray(row_ends, dtype=np.int64)
        ends = np.zeros(len(row_ends), dtype=np.int64)
        out = np.empty(2 * values.size + 8 * len(row_ends) + 64, dtype=np.uint8)
        args = (self.lows, self.sizes, self.freqs, self.cums)
        while not _encode_given(values, tabs, row_ends, *args, out, ends):
            out = np.empty(out.size * 4, dtype=np.uint8)
        data = out.tobytes()
        starts = [0, *ends[:-1].tolist()]
        return [data[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]

    def decode(
        self,
        streams: Sequence[bytes],
        tabs: np.ndarray,
        row_ends: np.ndarray,
        base: int = 0,
        after: Stop | None = None,
    ) -> np.ndarray:
        """Values of every row, flat, value q under table ``base + tabs[q]`` (``tabs`` of any
        integer type, used as it is when contiguous: the loop checks each index), to each
        stream's end: from its head, or ``after`` a first part (``decode_head``); RowError
        naming the first row that does not decode."""
        out, _ = self._decode(streams, tabs, row_ends, base, after, finish=True)
        return out

    def decode_head(
        self, streams: Sequence[bytes], tabs: np.ndarray, row_ends: np.ndarray, base: int = 0
    ) -> tuple[np.ndarray, Stop]:
        """The first values of every row's stream, as ``decode``, and where each row stopped:
        the rest, coded under tables that these values choose, decodes ``after`` it."""
        return self._decode(streams, tabs, row_ends, base, None, finish=False)

    def _decode(
        self,
        streams: Sequence[bytes],
        tabs: np.ndarray,
        row_ends: np.ndarray,
        base: int,
        after: Stop | None,
        finish: bool,
    ) -> tuple[np.ndarray, Stop]:
        if after is None:
            lengths = np.fromiter((len(s) for s in streams), dtype=np.int64, count=len(streams))
            ends = np.cumsum(lengths)
            starts = ends - lengths
            size = int(ends[-1]) if len(ends) else 0
            joined = b"".join([*streams, bytes(size % 2 + 4)])
            words = np.frombuffer(joined, dtype="<u2").astype(np.uint16, copy=False)
        else:  # the streams as the first part joined them: not joined again
            if len(after.states) != len(streams):
                raise ValueError(f"where {len(after.states)} rows stopped, for {len(streams)} streams")
            words, starts, ends = after.words, after.starts, after.ends
        out = np.empty(int(row_ends[-1]) if len(row_ends) else 0, dtype=np.int64)
        tabs = np.ascontiguousarray(tabs)
        if tabs.dtype.kind not in "iu" or tabs.size < out.size:
            raise ValueError("an integer table index for every value")
        row_ends = np.ascontiguousarray(row_ends, dtype=np.int64)
        states = np.zeros(len(streams), np.uint64) if after is None else after.states.copy()
        nexts = np.zeros(len(streams), np.uint64) if after is None else after.nexts.copy()
        args = (self.packed, out, states, nexts, finish)
        bad, why = _decode_given(words, starts, ends, tabs, np.int64(base), row_ends, *args)
        if why == 2:
            raise ValueError("a table index outside the tables")
        if bad >= 0:
            raise RowError(int(bad), "the stream does not decode to its row's values (corrupt or cut)")
        return out, Stop(states, nexts, words, starts, ends)


@dataclass(frozen=True)
class Stop:
    """Where each row's stream stopped after its first part (``GivenTables.decode_head``): its
    rANS state and next 16-bit word in the rows' streams as that decode joined them (kept, so
    the rest decodes from the same words)."""

    states: np.ndarray  # (N,) uint64
    nexts: np.ndarray  # (N,) uint64: word positions in ``words``
    words: np.ndarray  # the rows' streams joined, as 16-bit words
    starts: np.ndarray  # (N,) int64: each row's first byte in them
    ends: np.ndarray  # (N,) int64: the byte after its last


def quantize_pmf(p: np.ndarray, unit: float = 1 / 32) -> np.ndarray:
    """Probabilities (the escape last) -> frequencies summing to 2**GIVEN_BITS: a symbol with
    at least ``unit`` of a unit of mass gets at least 1 (one with less is sent as an escape,
    32 bits more), the escape at least 1; the rounding's excess or shortfall is taken from or
    given to the largest. (With half a unit as the floor, the values next to a sharp peak,
    e.g. +-1 under a Gaussian of deviation 0.13, a quarter of a unit, were escapes: a demo
    photo rd model's main streams took 236 bytes a held-out crop, 220 with 1/32, where the
    priors' own likelihoods (floored at 1e-9) sum to 184. The hyperprior's tables take
    1/256: ``pipeline.codec.learned``.)"""
    total = 1 << GIVEN_BITS
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    p = p / p.sum()
    f = np.where(p * total >= unit, np.maximum(1, np.round(p * total)), 0).astype(np.int64)
    f[-1] = max(f[-1], 1)
    while (diff := total - int(f.sum())) != 0:
        i = int(np.argmax(f))
        f[i] += diff if diff > 0 else -min(-diff, int(f[i]) - 1)
    return f
