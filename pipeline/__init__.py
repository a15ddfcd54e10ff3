"""vaezip: archive datasets as quantized, zstd-compressed VAE latent codes.

The map of the package, one line per module: what it takes and what it gives. The jobs in
``jobs/`` are thin command lines over these; ``docs/FORMAT.md`` specifies the files.

Where work runs
    runner.py        Shard descriptors + a worker class -> results from a pool of Ray actors
                     (the one module that talks to Ray; no torch).
    completion.py    A worker's body -> one committed output file, its _done/ record (written
                     last) and a ShardResult; is_complete for resume (no torch).
    overlap.py       Iterators -> the same items, read ahead (prefetch) or written one behind.
    hostpool.py      A batch's rows + a function -> the results, on N host threads, in order.
    plan.py          An input (or archive) URI -> deterministic Shard descriptors; fingerprints.
    names.py         A relative path -> its output file names; a row -> its sample key.
    job.py           Encode settings + calibrated parameters -> JobParams and job.json;
                     --overwrite's clean-up of the previous job's files.
    claim.py         An output folder -> held by one driver at a time (_claim.json).
    integrity.py     An archive -> its files with what the manifest recorded (size, sha256,
                     rows); the checks decode, inspect and verify make.
    manifest.py      Completion records -> manifest.json; failures -> failures.json.
    storage.py       URIs -> bytes, listings and atomic writes (the one door to fsspec).

The workers (plain classes, made remote by runner.py)
    model_worker.py  Checkpoint + device + threads + precision -> a loaded model (the
                     workers' base); its host workers, from the CPUs Ray gave the actor.
    precision.py     --precision + a device -> the model's dtype (autocast); pinned copies.
    encoder.py       A Shard -> Encoded batches: keys, layouts, posterior means, log-variances.
    encode.py        EncodeWorker: calibrate(shards) -> quantizer/codec parameters;
                     process(shard, job) -> one .vz.parquet file.
    decode.py        DecodeWorker: process(archive shard) -> one reconstruction output.
    features.py      FeatureWorker: process(shard) -> one Parquet table of posterior means.

The codec and the format (pure functions over arrays and bytes; no Ray)
    quantize.py      Latent statistics -> QuantizerParams; latents <-> integer codes.
    quantize_torch.py  The same quantizer on a device tensor (float64: the same codes).
    ratecontrol.py   Calibration rows + the decoder + a loss bound in dB -> per-channel steps
                     (--max-loss-db), checked on rows they were not fitted on.
    codec.py         Integer codes <-> byte rows (fold, layout, crc32, zstd framing).
    compress.py      Per-row latents <-> vz_codes payloads (quantize + codec, both directions).
    format.py        CodeRows + passthrough columns <-> archive files (schema, metadata,
                     ArchiveWriter, iter_stored, archive_files).
    archive.py       Archive files -> LatentBatch (dequantized, checked) -> samples (SampleDecoder).
    outputs.py       Restored samples -> .npy, Parquet with PNGs, image folders, WebDataset
                     (with datasets feature metadata and WebDataset's key conventions).
    tiles.py         Images <-> NxN tiles with keys <key>@y,x, put back together on decode.

Data in and out
    readers/         Dataset files (.npy/.npz, Parquet, datasets' Arrow, WebDataset,
                     img2dataset folders, image folders) -> Batch.
    value_range.py   The data units a model's 0..1 stands for (no torch).
    samples.py       Raw samples in their units <-> model arrays, restored exactly (SampleLayout).
    dataset.py       A dataset sample -> in-memory model arrays (training, evaluation); random
                     crops; the value range training picks.
    baseline.py      Samples + a target PSNR -> what PNG, JPEG, WebP, zstd spend on them.
    demo_data.py     Package-shipped real data (digits, skimage photos) -> demo shards.
    torch_data.py    An archive -> a PyTorch IterableDataset of latents or samples.
    raydata.py       An archive -> a Ray Dataset of latents or samples.

Models and training
    models/          ModelConfig -> VAE (MLP, conv, diffusers AutoencoderKL); the one module
                     that knows the model classes.
    checkpoint.py    A VAE <-> safetensors weights + JSON config, fingerprinted.
    elbo.py          Model + batch -> the ELBO and a tighter likelihood bound.
    training.py      Arrays + TrainSettings -> a trained VAE and its history.
    generate.py      A VAE + a seed -> samples from the prior.
    report.py        Training history + reconstructions -> report.png.
    grid.py          Samples -> one tiled image.
    errors.py        ConfigError, InputError (file and row), CheckpointError.
"""

__version__ = "0.1.0"
