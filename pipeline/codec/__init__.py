"""The codec and the format: pure functions over arrays and bytes (no Ray, no model).

    quantize.py      Latent statistics -> QuantizerParams; latents <-> integer codes.
    quantize_torch.py  The same quantizer on a device tensor (float64: the same codes).
    ratecontrol.py   Calibration rows + the decoder + a loss bound in dB -> per-channel steps
                     (--max-loss-db), checked on rows they were not fitted on.
    codec.py         Integer codes <-> byte rows (fold, layout, crc32, zstd framing; rans; learned).
    ctxcoder.py      Codes <-> rANS streams under a context model fitted on calibration rows;
                     and under given tables (the learned codec's loops).
    learned.py       An rd model's priors as integer tables; rows <-> rANS streams under them
                     (codec "learned"), the tables <-> the footer's bytes.
    compress.py      Per-row latents <-> vz_codes payloads (quantize + codec, both directions).
    format.py        CodeRows + passthrough columns <-> archive files (schema, metadata,
                     ArchiveWriter, iter_stored, archive_files).

Imports only ``pipeline.core``.
"""
