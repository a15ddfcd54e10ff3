"""Latents <-> the payloads an archive row stores: the two directions side by side, as
CompressAI keeps ``compress`` and ``decompress`` adjacent.

    compress:    per-row (C, P) latents -> quantize (job-wide) -> layout -> crc32 -> payload
                 (encode_codes: the same from codes a device quantized)
    decompress:  payload -> (zstd frame) -> crc32 check -> length check -> codes
                 -> dequantize -> per-row latents shaped as ``vz_latent_shape``

Rows of one shape are quantized and dequantized together. Everything read back is untrusted:
each row's checksum, channel count and length are checked before its codes are used.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.codec.codec import Codec, checksum, latent_width, rows_to_codes
from pipeline.codec.ctxcoder import RowError
from pipeline.codec.quantize import QuantizerParams, dequantize, quantize
from pipeline.core.errors import InputError

# One row's codes: far above any real latent (an SD VAE's 4x128x128 latent is 64 KiB at 8 bits),
# far below what would exhaust a worker.
MAX_ROW_CODE_BYTES = 64 << 20


def _by_shape(shapes: list[tuple[int, ...]]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    return groups


def compress(
    means: list[np.ndarray], quantizer: QuantizerParams, codec: Codec, widths: list[int] | None = None
) -> tuple[list[bytes], list[int], int]:
    """Per-row (C, P) latents, with their latents' line ``widths`` (``codec.latent_width``;
    one line where not given), -> ``vz_codes`` payloads, their checksums, and how many values
    the quantizer clipped."""
    codes: list[np.ndarray] = [np.empty(0)] * len(means)
    clipped = 0
    for idx in _by_shape([m.shape for m in means]).values():
        group, n = quantize(np.stack([means[i] for i in idx]), quantizer)
        clipped += n
        for j, i in enumerate(idx):
            codes[i] = group[j]
    return *encode_codes(codes, codec, widths, means), clipped


def encode_codes(
    codes: list[np.ndarray],
    codec: Codec,
    widths: list[int] | None = None,
    means: list[np.ndarray] | None = None,
) -> tuple[list[bytes], list[int]]:
    """Per-row (C_active, P) codes (quantized already, e.g. on the device), with their
    latents' line ``widths``, -> ``vz_codes`` payloads and their checksums. ``means``: the
    latents they were quantized from, where there (``Codec.encode``'s ``latents``)."""
    payloads: list[bytes] = [b""] * len(codes)
    crcs = [0] * len(codes)
    ws = widths if widths is not None else [c.shape[-1] for c in codes]
    for key, idx in _by_shape([(*c.shape, ws[i]) for i, c in enumerate(codes)]).items():
        latents = None if means is None else np.stack([means[i] for i in idx])
        group_payloads, group_crcs = codec.encode(np.stack([codes[i] for i in idx]), key[-1], latents)
        for j, i in enumerate(idx):
            payloads[i], crcs[i] = group_payloads[j], group_crcs[j]
    return payloads, crcs


def _positions(latent_shape: tuple[int, ...]) -> int:
    return math.prod(int(d) for d in latent_shape[1:])  # 1 for a vector latent [C]


def decompress(
    payloads: list[bytes],
    crcs: list[int],
    latent_shapes: list[list[int]],
    quantizer: QuantizerParams,
    codec: Codec,
    uri: str,
    start: int,
    dequantized: bool = True,
) -> list[np.ndarray]:
    """``vz_codes`` payloads -> per-row dequantized latents of shape ``latent_shape`` (or, with
    ``dequantized=False``, the integer codes of the stored channels, shaped (C_active,
    *latent_shape[1:]), for a device to dequantize); errors name ``uri`` and the row (``start``
    is the first row's number in the file)."""
    active = sum(quantizer.active)
    shapes: list[tuple[int, ...]] = []
    for i, lshape in enumerate(latent_shapes):
        if not lshape or lshape[0] != quantizer.channels:
            raise InputError(
                uri,
                f"latent shape {lshape} does not fit the quantizer's {quantizer.channels} channels",
                row=start + i,
            )
        expected = active * _positions(tuple(lshape)) * quantizer.dtype.itemsize
        if expected > MAX_ROW_CODE_BYTES:
            raise InputError(
                uri,
                f"latent shape {lshape} claims {expected:,} bytes of codes, over the "
                f"limit of {MAX_ROW_CODE_BYTES:,}",
                row=start + i,
            )
        shapes.append(tuple(lshape))
    try:
        raws = codec.raws(
            payloads, [(active, _positions(s), latent_width(s)) for s in shapes], quantizer.dtype
        )
    except RowError as err:
        raise InputError(uri, f"codes do not decompress ({err})", row=start + err.row) from err
    for i, (data, crc, shape) in enumerate(zip(raws, crcs, shapes, strict=True)):
        if checksum(data) != crc:
            raise InputError(uri, "checksum mismatch: the codes are corrupt", row=start + i)
        if len(data) != active * _positions(shape) * quantizer.dtype.itemsize:
            raise InputError(uri, "code length does not fit the latent shape", row=start + i)
    out: list[np.ndarray] = [np.empty(0)] * len(raws)
    for group_shape, idx in _by_shape(shapes).items():
        codes = rows_to_codes(
            [raws[i] for i in idx],
            (active, _positions(group_shape)),
            quantizer.dtype,
            codec.params.layout,
            codec.params.centers,
        )
        if dequantized:
            latents = dequantize(codes, quantizer).reshape(len(idx), *group_shape)
        else:
            latents = codes.reshape(len(idx), active, *group_shape[1:])
        for j, i in enumerate(idx):
            out[i] = latents[j]
    return out
