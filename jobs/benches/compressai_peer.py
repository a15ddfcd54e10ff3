"""CompressAI's own models trained and measured beside vaezip's rd models, in the same run.

CompressAI pins numpy below 2 and needs a torchvision built for its torch, so it lives in an
interpreter of its own (``jobs.bench --compressai-python``): this file is run by that
interpreter as a script, imports nothing of vaezip's, and talks to the benchmark through files:
the crops as ``.npy`` (read with ``allow_pickle=False``) and its results as JSON.

    python compressai_peer.py TRAIN.npy HELDOUT.npy STEPS BATCH THREADS OUT.json [SEEDS]

Each model (``bmshj2018_hyperprior`` at each lambda of vaezip's hyperprior runs, from each of
SEEDS seeds (1 unless given), and ``bmshj2018_factorized`` at vaezip's factorized lambda from
seed 0; N=64, M=96, vaezip's widths) is trained from its seed (weights and batches) for STEPS
steps of BATCH crops on uniform noise with the rate-distortion loss ``lambda * 255^2 * MSE +
bpp`` (Adam at vaezip's learning rate 1e-3, gradients clipped at 1 as
CompressAI's example does, its auxiliary loss for the factorized prior's quantiles at 1e-3),
then ``update()`` and ``compress()`` / ``decompress()`` on the held-out crops: the bytes are
its strings' bytes, the PSNR that of the decoded crops rounded to 8 bits.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch

RUNS = (("hyperprior", 0.0018), ("hyperprior", 0.0067), ("hyperprior", 0.025), ("factorized", 0.0067))


def _nchw(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(err, 1e-12))))


def _train(model, data: torch.Tensor, steps: int, batch: int, lmbda: float, seed: int) -> None:
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main, lr=1e-3), torch.optim.Adam(aux, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    pixels = data.shape[2] * data.shape[3]
    model.train()
    perm, i = torch.arange(0), len(data)
    for _ in range(steps):  # epochs of a fresh permutation each, as vaezip's training takes them
        if i >= len(data):
            perm, i = torch.randperm(len(data), generator=gen), 0
        x = data[perm[i : i + batch]]
        i += batch
        out = model(x)
        bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (-math.log(2) * batch * pixels)
        loss = lmbda * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
        opt.zero_grad()
        aux_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        model.aux_loss().backward()
        aux_opt.step()


def _point(model, heldout: np.ndarray) -> dict:
    model.eval()
    model.update(force=True)
    x = _nchw(heldout)
    with torch.no_grad():
        enc = model.compress(x)
        back = model.decompress(enc["strings"], enc["shape"])["x_hat"].clamp(0, 1)
    back8 = np.round(back.numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
    per_stream = [sum(len(s) for s in strings) / len(heldout) for strings in enc["strings"]]
    total = float(sum(per_stream))
    return {
        "bytes_per_sample": total,
        "side_bytes_per_sample": float(sum(per_stream[1:])),
        "bpp": 8 * total / (heldout.shape[1] * heldout.shape[2]),
        "psnr": _psnr(back8, heldout),
    }


def main(argv: list[str]) -> int:
    train_path, heldout_path, steps, batch, threads, out_path = argv[:6]
    seeds = int(argv[6]) if len(argv) > 6 else 1
    import compressai
    from compressai.models import FactorizedPrior, ScaleHyperprior  # bmshj2018_factorized, _hyperprior

    torch.set_num_threads(int(threads))
    data = _nchw(np.load(train_path, allow_pickle=False))
    heldout = np.load(heldout_path, allow_pickle=False)
    points = []
    runs = [(prior, lmbda, s) for prior, lmbda in RUNS for s in range(seeds if prior == "hyperprior" else 1)]
    for prior, lmbda, seed in runs:
        torch.manual_seed(seed)
        model = (ScaleHyperprior if prior == "hyperprior" else FactorizedPrior)(N=64, M=96)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _train(model, data, int(steps), int(batch), lmbda, seed)
        spent = {"train_cpu_s": time.process_time() - cpu0, "train_wall_s": time.perf_counter() - wall0}
        points.append({"prior": prior, "lmbda": lmbda, "seed": seed, **spent, **_point(model, heldout)})
        print(json.dumps(points[-1]), flush=True)
    result = {"compressai": compressai.__version__, "torch": torch.__version__, "points": points}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
