"""The models: architectures, checkpoints, the ELBO and the precision they run at.

    nets/            ModelConfig -> VAE (MLP, conv, diffusers AutoencoderKL, rd codec); the one
                     package that knows the model classes.
    checkpoint.py    A VAE <-> safetensors weights + JSON config, fingerprinted.
    elbo.py          Model + batch -> the ELBO and a tighter likelihood bound.
    entropy.py       Learned priors (factorized, Gaussian conditional) -> likelihoods, bits,
                     and the probability tables their coder is built from.
    rd_loss.py       An rd model + batch -> lambda * 255^2 * MSE + bits per pixel.
    precision.py     --precision + a device -> the model's dtype (autocast); pinned copies.

Imports only ``pipeline.core``.
"""
