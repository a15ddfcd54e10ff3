"""Data in and out: dataset files -> samples -> model arrays, and back to files.

    readers/         Dataset files (.npy/.npz, Parquet, datasets' Arrow, WebDataset,
                     img2dataset folders, image folders) -> Batch.
    samples.py       Raw samples in their units <-> model arrays, restored exactly (SampleLayout).
    grid.py          Samples -> one tiled image.
    tiles.py         Images <-> NxN tiles with keys <key>@y,x, put back together on decode.
    rd_rows.py       An rd model + its coder: images <-> (main, side) streams; the hyperprior's
                     side steps the learned codec needs; an rd model's quantizer and codec.
    archive.py       Archive files -> LatentBatch (dequantized, checked) -> samples (SampleDecoder).
    outputs.py       Restored samples -> .npy, Parquet with PNGs, image folders, WebDataset
                     (with datasets feature metadata and WebDataset's key conventions).
    baseline.py      Samples + a target PSNR -> what PNG, JPEG, WebP, zstd spend on them.
    demo_data.py     Package-shipped real data (digits, skimage photos) -> demo shards.

Imports ``pipeline.core``, ``pipeline.codec`` and ``pipeline.model``; never the ledger, the
workers or the runner.
"""
