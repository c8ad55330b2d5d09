"""Test-split likelihood on the data's own discrete levels, in nats/image and bits/dim.

Exact families report log p(x). Bound families report their training bound (ELBO, dequantised bound, VLB) and,
where the family supports it, the importance-weighted bound IWAE-k, repeated ``iwae_repeats`` times with
independent samples; the reported estimate is the mean over repeats and its standard error is the spread of
the repeats (sd / √repeats). ``sem_images_nats`` is the standard error of the test mean over images.

``max_images`` scores a fixed random subset of the test split instead of all of it (the same images for every
model and seed of a dataset): on the 28×28 grid the bounds that cost many network passes per image (the
diffusion VLB, IWAE-k) would otherwise dominate the evaluation. ``num_test`` records how many were scored.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..distributions import nats_to_bits_per_dim
from ..models.base import Likelihood
from . import register_evaluator


@dataclass
class LikelihoodConfig:
    iwae_k: int = 1000  # importance samples per image for the IWAE-k bound
    iwae_repeats: int = 3  # independent repeats of the IWAE estimate (its standard error)
    batch_size: int = 256  # test images per forward pass
    max_images: int = 0  # score a fixed random subset of n test images (same for every model and seed); 0 = all

    def validate(self):
        if self.iwae_k < 1 or self.iwae_repeats < 1 or self.batch_size < 1:
            raise ValueError("iwae_k, iwae_repeats and batch_size must be ≥ 1")
        if self.max_images < 0:
            raise ValueError(f"max_images must be ≥ 0 (0 = the whole test split), got {self.max_images}")


def fixed_rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one purpose ("in", "noise", "mnist5k", ...), independent of which other sets exist."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def subsample(x: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """At most ``n`` rows of ``x``, a uniform random subset without replacement (all of them if len ≤ n)."""
    if len(x) <= n:
        return x
    return x[torch.from_numpy(np.sort(rng.choice(len(x), size=n, replace=False)))]


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in batches on ``device``; concatenate the (B,) results on the CPU."""
    return torch.cat([fn(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)])


def summarize_nll(log_p: torch.Tensor, num_dims: int) -> dict:
    """Per-image log-probabilities (N,) → mean NLL in nats and bits/dim, with the standard error over images."""
    nll = -log_p
    n = len(nll)
    sem = float(nll.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
    mean = float(nll.mean())
    return {"nll_nats": mean, "nll_bpd": float(nats_to_bits_per_dim(mean, num_dims)), "sem_images_nats": sem}


@register_evaluator("likelihood", config=LikelihoodConfig, order=10)
def evaluate_likelihood(ctx, cfg: LikelihoodConfig) -> dict | None:
    model = ctx.model
    if model.likelihood is Likelihood.NONE:
        return {"type": "none", "estimator": "none"}
    x = ctx.dataset.test.x
    num_split = len(x)
    if cfg.max_images:
        x = subsample(x, cfg.max_images, fixed_rng(0, "likelihood-test"))
    D = ctx.dataset.info.num_dims
    base = summarize_nll(batched(model.log_prob, x, cfg.batch_size, ctx.device), D)
    out = {
        "type": model.likelihood.value,
        "estimator": model.estimator,
        **base,
        "stderr_nats": 0.0,
        "num_test": len(x),
        "num_test_split": num_split,
        "num_dims": D,
        "num_levels": ctx.dataset.info.num_levels,
    }
    if model.likelihood is Likelihood.BOUND:
        out["bound_nats"] = base["nll_nats"]  # the family's own bound (e.g. −ELBO)
    if model.supports_iwae:
        repeats = []
        for r in range(cfg.iwae_repeats):
            fn = lambda xb: model.log_prob_iwae(xb, cfg.iwae_k)  # noqa: E731
            repeats.append(summarize_nll(batched(fn, x, cfg.batch_size, ctx.device), D))
        means = torch.tensor([r["nll_nats"] for r in repeats], dtype=torch.float64)
        mean = float(means.mean())
        out.update(
            estimator=f"IWAE-{cfg.iwae_k}",
            nll_nats=mean,
            nll_bpd=float(nats_to_bits_per_dim(mean, D)),
            stderr_nats=float(means.std(unbiased=True) / math.sqrt(len(means))) if len(means) > 1 else 0.0,
            sem_images_nats=repeats[0]["sem_images_nats"],
            iwae_k=cfg.iwae_k,
            iwae_repeats=cfg.iwae_repeats,
            elbo_iwae_gap_nats=out["bound_nats"] - mean,
        )
    return out
