"""vaezip: archive datasets as quantized, zstd-compressed VAE latent codes.

The package is split by role (see docs and ../shared/DESIGN.md):

    models/      the VAE families and their configs (the only place that knows model classes)
    elbo.py      the training objective and likelihood bounds
    checkpoint.py  safetensors weights + JSON config, fingerprinted
    storage.py   the one door to fsspec
    readers/     dataset formats -> batches of samples
    training.py  the training loop behind `python -m jobs.train`
"""

__version__ = "0.1.0"
