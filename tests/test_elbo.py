import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from pipeline.model.elbo import elbo_terms, iwae_bound, psnr
from pipeline.model.nets import ConvConfig, MLPConfig, Posterior, build_model


def test_analytic_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(64, 10, generator=gen) * 3
    logvar = torch.randn(64, 10, generator=gen) * 2
    ours = Posterior(mean, logvar).kl()
    ref = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_sampled_z():
    model = build_model(MLPConfig(input_dim=16, latent_dim=4, hidden_dims=(8,)))
    mean = torch.zeros(3, 4, requires_grad=True)
    logvar = torch.zeros(3, 4, requires_grad=True)
    z = Posterior(mean, logvar).sample(torch.Generator().manual_seed(0))
    model.decode(z).pow(2).sum().backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_elbo_terms_backpropagate_to_every_parameter():
    for config in (
        MLPConfig(input_dim=16, latent_dim=4, hidden_dims=(8,)),
        ConvConfig(in_channels=1, latent_channels=2, base_channels=4),
    ):
        model = build_model(config)
        x = torch.rand(4, 16) if config.kind == "mlp" else torch.rand(4, 1, 12, 12)
        elbo_terms(model, x).loss().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name


def test_bernoulli_likelihood_decodes_probabilities():
    model = build_model(MLPConfig(input_dim=16, latent_dim=4, likelihood="bernoulli"))
    x = (torch.rand(8, 16) > 0.5).float()
    t = elbo_terms(model, x)
    assert torch.all(t.recon_nll > 0)  # -log of a probability mass is positive
    assert t.x_hat.min() >= 0 and t.x_hat.max() <= 1


def test_iwae_bound_is_at_least_the_elbo_on_a_trained_model(trained_mlp):
    model, data = trained_mlp
    x = torch.from_numpy(data[:256])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([elbo_terms(model, x, gen).elbo for _ in range(20)]).mean(0)
    iwae = iwae_bound(model, x, samples=200, generator=gen)
    gap = (iwae - elbo).mean()
    # IWAE_K >= ELBO in expectation (Burda et al. 2016); on a trained model the gap is real.
    assert gap > 0.0, gap
    assert (iwae >= elbo - 0.5).float().mean() > 0.95


def test_trained_mlp_reconstructs_digits(trained_mlp):
    model, data = trained_mlp
    x = torch.from_numpy(data)
    with torch.no_grad():
        x_hat = model.decode(model.encode(x).mean)
    mean_psnr = float(psnr(x, x_hat).mean())
    assert 15.0 < mean_psnr < 40.0, mean_psnr


def test_psnr_of_known_error():
    x = torch.zeros(1, 100)
    assert np.isclose(float(psnr(x, x + 0.1)), 20.0, atol=1e-4)
