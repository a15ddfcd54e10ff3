"""The models: architectures, checkpoints, the ELBO and the precision they run at.

    nets/            ModelConfig -> VAE (MLP, conv, diffusers AutoencoderKL); the one package
                     that knows the model classes.
    checkpoint.py    A VAE <-> safetensors weights + JSON config, fingerprinted.
    elbo.py          Model + batch -> the ELBO and a tighter likelihood bound.
    precision.py     --precision + a device -> the model's dtype (autocast); pinned copies.

Imports only ``pipeline.core``.
"""
