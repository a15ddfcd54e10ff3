"""Train a VAE on an in-memory sample: Adam on the negative ELBO with beta and KL warm-up, or
on rate and distortion (``objective="rd"``, an RD model: pipeline.model.rd_loss).

dataset URI -> read_samples -> model arrays -> shuffle/split (seeded)
    -> epochs of minibatches: loss = recon NLL + beta_t * KL,  beta_t = beta * min(1, t / warmup)
                          or  loss = lambda * 255^2 * MSE + bits per pixel
    -> after each epoch, evaluate on (the first ``epoch_eval_rows`` rows of) the validation split
       (beta = 1): ELBO, PSNR, KL per latent channel; or bits per pixel and PSNR at the rounded
       latents, and bits per latent channel; at the end, on all of it
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import ConfigError
from pipeline.model.elbo import elbo_terms, psnr
from pipeline.model.nets import VAE
from pipeline.model.rd_loss import rd_terms

log = logging.getLogger(__name__)

# A latent channel whose KL is below this many nats per element carries (almost) no
# information about x; the same threshold as the "active units" count of Burda et al. (2016).
ACTIVE_KL_NATS = 0.01
OBJECTIVES = ("elbo", "rd")
# an rd model's gradients are clipped to this norm, as CompressAI's training does: without it,
# at lambda 0.025 and the learning rate 1e-3, the loss went from 145 to 5e6 within 73 steps
# on the demo crops (with it: 426 to 10 in 220 steps)
RD_CLIP_NORM = 1.0


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    max_seconds: float | None = None
    max_steps: int | None = None  # stop after this many optimiser steps (a machine-independent budget)
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    warmup_steps: int = 500
    val_fraction: float = 0.1
    seed: int = 0
    objective: str = "elbo"  # "elbo", or "rd" for an RD model
    lmbda: float = 0.0067  # rd: weight of 255^2 * MSE against bits per pixel
    # the figures after each epoch are on at most this many validation rows (None: all); the
    # result's are on all of them. With no split held out the validation rows are the training
    # rows, and evaluating all of them every epoch cost the rd bench a third of its training
    epoch_eval_rows: int | None = 1024

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.lmbda <= 0:
            raise ConfigError(f"lambda must be positive, got {self.lmbda}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.beta <= 0 or self.learning_rate <= 0:
            raise ConfigError("beta and learning_rate must be positive")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.epoch_eval_rows is not None and self.epoch_eval_rows < 1:
            raise ConfigError(f"epoch_eval_rows must be positive, got {self.epoch_eval_rows}")

    def total_steps(self, train_rows: int) -> int:
        """The steps training takes unless time runs out first: every epoch's, or max_steps."""
        total = self.epochs * -(-train_rows // self.batch_size)
        return min(total, self.max_steps) if self.max_steps else total


@dataclass(frozen=True)
class Evaluation:
    elbo_nats: float  # mean per sample
    recon_nll_nats: float
    kl_nats: float
    psnr_db: float  # mean of per-sample PSNR
    kl_per_channel_nats: list[float]  # per latent element of the channel
    active_channels: int


@dataclass(frozen=True)
class RDEvaluation:
    """An RD model at its rounded latents, as the coder would see them."""

    bpp: float  # ideal code length (the priors' -log2 likelihoods) per pixel
    y_bits: float  # mean per sample
    z_bits: float  # mean per sample: side information
    psnr_db: float  # mean of per-sample PSNR of the decoded rounded latents
    bits_per_channel: list[float]  # mean per sample, per latent channel of y
    active_channels: int  # channels of y that cost more than 0.01 bits a sample


@dataclass(frozen=True)
class TrainResult:
    evaluation: Evaluation | RDEvaluation
    history: list[dict[str, float]]
    seconds: float
    steps: int
    epochs: int
    train_rows: int
    val_rows: int
    extra: dict[str, Any] = field(default_factory=dict)


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows); ``val_fraction`` 0 holds nothing out (one big image cut
    into crops has no rows to spare): the figures are then the training rows' own."""
    order = np.random.default_rng(seed).permutation(n)
    if val_fraction == 0:
        return order, order[:0]
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise ConfigError(f"{n} rows are too few to hold out a validation split")
    return order[n_val:], order[:n_val]


@torch.no_grad()
def evaluate(model: VAE, data: torch.Tensor, batch_size: int = 512, seed: int = 0) -> Evaluation:
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    elbo, nll, kl, ps, kl_ch = [], [], [], [], []
    for i in range(0, len(data), batch_size):
        x = data[i : i + batch_size]
        t = elbo_terms(model, x, gen)
        elbo.append(t.elbo)
        nll.append(t.recon_nll)
        kl.append(t.kl)
        ps.append(psnr(x, t.x_hat))
        kl_ch.append(t.kl_per_channel * len(x))
    positions = int(np.prod(model.latent_shape(tuple(data.shape[1:]))[1:], dtype=np.int64))
    per_channel = (torch.stack(kl_ch).sum(0) / len(data) / positions).cpu()
    return Evaluation(
        elbo_nats=float(torch.cat(elbo).mean()),
        recon_nll_nats=float(torch.cat(nll).mean()),
        kl_nats=float(torch.cat(kl).mean()),
        psnr_db=float(torch.cat(ps).mean()),
        kl_per_channel_nats=[round(float(v), 6) for v in per_channel],
        active_channels=int((per_channel > ACTIVE_KL_NATS).sum()),
    )


@torch.no_grad()
def evaluate_rd(model: VAE, data: torch.Tensor, batch_size: int = 256) -> RDEvaluation:
    from pipeline.model.entropy import LIKELIHOOD_FLOOR, gaussian_likelihood
    from pipeline.model.nets.rd import RDModel

    assert isinstance(model, RDModel)
    model.eval()
    ps, y_bits, z_bits, per_channel = [], [], [], []
    for i in range(0, len(data), batch_size):
        x = data[i : i + batch_size]
        y = model.encode(x).mean
        y_hat = torch.round(y)
        if model.hyper:  # the side information of y before rounding, as the coder takes it
            z_hat = torch.round(model.hyper_latent(y))
            p_y = gaussian_likelihood(y_hat, model.scales(z_hat, y_hat.shape[2], y_hat.shape[3]))
            z_bits.append(
                -torch.log2(model.prior.likelihood(z_hat).clamp_min(LIKELIHOOD_FLOOR)).flatten(1).sum(1)
            )
        else:
            p_y = model.prior.likelihood(y_hat)
            z_bits.append(torch.zeros(len(x), device=x.device))
        cost = -torch.log2(p_y.clamp_min(LIKELIHOOD_FLOOR))
        y_bits.append(cost.flatten(1).sum(1))
        per_channel.append(cost.flatten(2).sum(2).sum(0))
        ps.append(psnr(x, model.decode(y_hat, (x.shape[-2], x.shape[-1])).clamp(0, 1)))
    yb, zb = torch.cat(y_bits), torch.cat(z_bits)
    channels = (torch.stack(per_channel).sum(0) / len(data)).cpu()
    pixels = data.shape[-2] * data.shape[-1]
    return RDEvaluation(
        bpp=float((yb + zb).mean() / pixels),
        y_bits=float(yb.mean()),
        z_bits=float(zb.mean()),
        psnr_db=float(torch.cat(ps).mean()),
        bits_per_channel=[round(float(v), 4) for v in channels],
        active_channels=int((channels > 0.01).sum()),
    )


def _evaluate(model: VAE, x: torch.Tensor, settings: TrainSettings) -> Evaluation | RDEvaluation:
    if settings.objective == "rd":
        return evaluate_rd(model, x)
    return evaluate(model, x, seed=settings.seed)


def train(
    model: VAE,
    data: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (N, ...) float32; returns the validation figures (on
    every validation row; the history's, after each epoch, on ``settings.epoch_eval_rows``).

    ``on_step(step, total_steps, loss)`` lets the driver draw a progress bar.
    """
    torch.manual_seed(settings.seed)
    rd = settings.objective == "rd"
    if rd != (getattr(model.config, "kind", "") == "rd"):
        raise ConfigError("--objective rd trains an rd model, and an rd model trains on --objective rd")
    train_idx, val_idx = split(len(data), settings.val_fraction, settings.seed)
    x_train = torch.from_numpy(data[train_idx]).to(device)
    x_val = torch.from_numpy(data[val_idx if len(val_idx) else train_idx]).to(device)
    model.to(device)
    # The likelihood's one scale parameter gets a 10x learning rate: Adam moves each weight by
    # about lr per step, and the scale must travel a few units in log space, not 1e-3.
    rest = [p for name, p in model.named_parameters() if name != "log_scale"]
    groups: list[dict[str, Any]] = [
        {"params": rest},
        {"params": [model.log_scale], "lr": 10 * settings.learning_rate},
    ]
    opt = torch.optim.Adam(
        groups,
        lr=settings.learning_rate,
    )
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    total = settings.total_steps(len(x_train))
    history: list[dict[str, float]] = []
    start, step, epoch = time.perf_counter(), 0, 0
    out_of_time = out_of_steps = False
    for epoch in range(1, settings.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen).to(device)
        losses = []
        for i in range(0, len(x_train), settings.batch_size):
            warm = min(1.0, step / settings.warmup_steps) if settings.warmup_steps else 1.0
            beta_t = settings.beta * warm
            batch = x_train[perm[i : i + settings.batch_size]]
            if rd:
                loss = rd_terms(model, batch).loss(settings.lmbda)  # type: ignore[arg-type]
            else:
                loss = elbo_terms(model, batch).loss(beta_t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if rd:  # as CompressAI trains its codecs: a step never follows one wild batch far
                torch.nn.utils.clip_grad_norm_(model.parameters(), RD_CLIP_NORM)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step, total, losses[-1])
            if settings.max_seconds and time.perf_counter() - start > settings.max_seconds:
                out_of_time = True
                break
            if step >= total:
                out_of_steps = step < settings.epochs * -(-len(x_train) // settings.batch_size)
                break
        ev = _evaluate(model, x_val[: settings.epoch_eval_rows], settings)
        figure = {"val_bpp": ev.bpp} if isinstance(ev, RDEvaluation) else {"val_elbo_nats": ev.elbo_nats}
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": float(np.mean(losses)),
                **figure,
                "val_psnr_db": ev.psnr_db,
                "seconds": time.perf_counter() - start,
            }
        )
        log.info(
            "epoch %d step %d train loss %.3f val %s PSNR %.2f dB",
            epoch,
            step,
            history[-1]["train_loss"],
            f"{ev.bpp:.3f} bits/pixel" if isinstance(ev, RDEvaluation) else f"ELBO {ev.elbo_nats:.3f} nats",
            ev.psnr_db,
        )
        if out_of_time:
            log.info("stopping: time budget of %.0f s reached after %d steps", settings.max_seconds, step)
            break
        if out_of_steps:
            log.info("stopping: %d steps reached (--max-steps)", step)
            break
    if settings.epoch_eval_rows is not None and len(x_val) > settings.epoch_eval_rows:
        ev = _evaluate(model, x_val, settings)
    model.eval()
    return TrainResult(
        evaluation=ev,
        history=history,
        seconds=time.perf_counter() - start,
        steps=step,
        epochs=epoch,
        train_rows=len(x_train),
        val_rows=len(val_idx),
    )
