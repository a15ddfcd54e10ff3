"""vaezip: archive datasets as quantized, zstd-compressed VAE latent codes.

The map of the package: one sub-package per layer, each with its own map in its docstring.
The jobs in ``jobs/`` are thin command lines over these; ``docs/FORMAT.md`` specifies the files.

    core/      errors, storage (the one door to fsspec), names, value ranges, host threads
    codec/     latents <-> integer codes <-> bytes <-> archive files (pure; no Ray, no model)
    model/     the VAEs (nets/), checkpoints, the ELBO, precision
    data/      dataset files <-> samples <-> model arrays; archives -> samples; outputs
    ledger/    the bookkeeping: shards, completion records, manifest, integrity, plan, job
    train/     training, sampling and the training report
    workers/   EncodeWorker, DecodeWorker, FeatureWorker: plain classes over a Shard
    loaders/   archives -> PyTorch and Ray Data for downstream training
    run/       the pool of Ray actors that runs the workers (the one door to Ray)

Imports point down this picture, never up, and the four at the top never import each other
(tests/test_layers.py):

    run  workers  train  loaders        (none imports another)
      \\     |       |     /
             ledger
               |
             data
            /    \\
        model    codec
            \\    /
             core

``ledger`` and ``run`` import no torch: the driver imports them.
"""

__version__ = "0.1.0"
