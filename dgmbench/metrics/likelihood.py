"""Test likelihood on the data's own discrete levels, in nats/image and bits/dim (evaluator ``likelihood``).

Exact families report log p(x). Bound families report their own bound (ELBO, dequantised bound, VLB) and, where
the family supports it (``supports_iwae``), an importance-weighted bound with k samples — IWAE-k for the VAEs
(Burda et al. 2016), the importance-weighted VLB over k forward trajectories for diffusion (the model names it,
``iwae_estimator``). ``nll_nats`` is always the tightest estimate measured, and ``estimator`` says which it is.

Every stochastic estimate carries its standard error. With R independent repeats of the per-image estimates
ℓ_{r,i} (R × N), the estimator's own noise in the mean over images is

    s.e. = √( mean_i s_i² / (N R) ),   s_i² = sample variance of ℓ_{·,i} over the repeats,

which needs only R ≥ 2 (the per-image variances are averaged over all N images, not over R means). Exact
likelihoods are deterministic: s.e. 0, one repeat. ``sem_images_nats`` is the other uncertainty, the standard
error of the mean over the test images themselves.

An importance-weighted estimate needs no second repeat for its s.e. (``iwae_repeats`` = 1, the default, for
families that give their weights, ``iwae_weights``): one draw of k weights per image, θ̂_i = log (1/k) Σ_j w_ij,
and the delete-one **jackknife** (Efron & Stein 1981) over its k samples,

    var_i = (k−1)/k Σ_j (θ̂_i(−j) − mean_j θ̂_i(−j))²,   θ̂_i(−j) = log (1/(k−1)) Σ_{l≠j} w_il,
    s.e. = √(Σ_i var_i) / N,

which, for a symmetric statistic of i.i.d. draws, does not understate the variance in expectation (Efron–Stein;
tests/test_likelihood_metrics.py checks it against the spread of many repeats). It halves the cost of the
estimate: the diffusion model's IW-VLB-8 is 8 of the 18 T-pass sweeps per image that two repeats cost.

Two trivial baselines on the same images, with no model at all, so that a family that learnt less than a
histogram is seen: the **uniform** distribution over the L levels (D log L nats/image), and the **per-pixel
histogram**: each dimension's categorical distribution of the levels counted on the training split, with add-one
(Laplace) smoothing, dimensions independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..distributions import nats_to_bits_per_dim
from ..models.base import Likelihood
from . import Result, batched, check_iwae_k_overrides, iwae_k_for, register_evaluator


@dataclass
class LikelihoodConfig:
    iwae_k: int = 1000  # importance samples per image for the importance-weighted bound
    iwae_k_overrides: dict[str, int] = field(default_factory=lambda: {"diffusion": 8})  # per family: K trajectories × T passes
    iwae_repeats: int = 1  # draws of the importance-weighted estimate: 1 = s.e. by the jackknife over its k samples
    # (families with iwae_weights; others then have no s.e.), ≥ 2 = s.e. from the spread of the repeats
    bound_repeats: int = 2  # independent repeats of a stochastic single-sample bound (its standard error)
    batch_size: int = 256  # test images per forward pass

    def validate(self):
        if min(self.iwae_k, self.iwae_repeats, self.bound_repeats, self.batch_size) < 1:
            raise ValueError("iwae_k, iwae_repeats, bound_repeats and batch_size must be ≥ 1")
        check_iwae_k_overrides(self.iwae_k_overrides)


@dataclass
class LikelihoodResult(Result):
    type: str  # what the family declares: exact | bound | none
    estimator: str  # what nll_nats is: exact, ELBO, IWAE-1000, dequantised bound, VLB, IW-VLB-16, ...; none
    nll_nats: float | None  # mean over the test images of −log p(x) or of the bound, nats/image
    nll_bpd: float | None  # the same in bits/dim: nats / (D ln 2)
    stderr_nats: float | None  # s.e. of nll_nats from the estimator's randomness (0: deterministic; None: 1 repeat)
    repeats: int  # independent repeats behind stderr_nats
    sem_images_nats: float | None  # standard error of the mean over the test images
    bound_estimator: str | None  # the family's own single-sample bound, when nll_nats is a tighter estimator
    bound_nats: float | None  # −(that bound), nats/image (e.g. −ELBO beside IWAE-k)
    bound_stderr_nats: float | None  # its standard error from its repeats
    bound_gap_nats: float | None  # bound_nats − nll_nats ≥ 0: what the tighter estimator gained
    iwae_k: int | None  # importance samples of the tighter estimator
    num_images: int  # test images scored (the context's test subset)
    images_sha1: str  # their index hash (metrics.json's test_subset)
    num_dims: int  # D
    num_levels: int  # L
    uniform_nll_nats: float  # baseline: uniform over the levels, D ln L
    histogram_nll_nats: float  # baseline: per-pixel histogram of the training split (add-one), same images
    stderr_method: str | None = None  # how stderr_nats was obtained: deterministic, repeats, jackknife over k samples


def nll_summary(per_image: torch.Tensor, stochastic: bool = True) -> tuple[float, float | None, float]:
    """(R, N) per-image log-probabilities from R repeats → (mean NLL, estimator s.e., s.e. over images), nats.
    The estimator's s.e. is 0 for a deterministic value and None (not estimable) for one repeat of a stochastic one."""
    R, N = per_image.shape
    nll = -per_image.double()
    mean = float(nll.mean())
    if not stochastic:
        stderr = 0.0
    else:
        stderr = float((nll.var(0, unbiased=True).mean() / (N * R)).sqrt()) if R > 1 else None
    sem = float(nll.mean(0).std(unbiased=True) / math.sqrt(N)) if N > 1 else 0.0
    return mean, stderr, sem


def repeats_method(repeats: int, stderr: float | None, stochastic: bool = True) -> str | None:
    """What a ``stderr_method`` field says of an s.e. from :func:`nll_summary`: "deterministic" (exact), "R repeats",
    or None (one draw of a stochastic estimate: no s.e.)."""
    if not stochastic:
        return "deterministic"
    return f"{repeats} repeats" if stderr is not None else None


def jackknife_log_mean_exp(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, N) log weights, k ≥ 2 → per column the log-mean-exp θ̂ = log (1/k) Σ_j w_j (N,) and the jackknife
    estimate of its variance (N,): (k−1)/k Σ_j (θ̂(−j) − mean_j θ̂(−j))², with θ̂(−j) the log-mean-exp of the
    k−1 others, from prefix and suffix log-cumulative sums (no cancellation when one weight dominates)."""
    k = log_w.shape[0]
    if k < 2:
        raise ValueError(f"the jackknife needs k ≥ 2 samples, got {k}")
    lw = log_w.double()
    estimate = torch.logsumexp(lw, 0) - math.log(k)
    none = torch.full_like(lw[:1], -math.inf)
    before = torch.cat([none, torch.logcumsumexp(lw, 0)[:-1]])  # log Σ_{l<j} w_l
    after = torch.cat([torch.logcumsumexp(lw.flip(0), 0).flip(0)[1:], none])  # log Σ_{l>j} w_l
    leave_one_out = torch.logaddexp(before, after) - math.log(k - 1)  # (k, N)
    variance = (k - 1) / k * ((leave_one_out - leave_one_out.mean(0)) ** 2).sum(0)
    return estimate, variance


def importance_weighted(model, x: torch.Tensor, k: int, repeats: int, batch_size: int,
                        device) -> tuple[float, float | None, float, int, str | None]:
    """The importance-weighted estimate of ``model`` (IWAE-k, IW-VLB-k) on ``x``: (mean NLL, estimator s.e., s.e.
    over images, draws, how the s.e. was obtained). One draw of a family that gives its weights: s.e. by the
    jackknife over its k samples; otherwise from ``repeats`` independent draws (None for one)."""
    if repeats == 1 and model.iwae_weights and k >= 2:
        log_w = batched(lambda xb: model.iwae_log_weights(xb, k), x, batch_size, device, dim=1)  # (k, N)
        estimate, variance = jackknife_log_mean_exp(log_w)
        sem = float(estimate.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else 0.0
        return (float(-estimate.mean()), float(variance.sum().sqrt() / len(x)), sem, 1,
                f"jackknife over the {k} samples")
    per_image = torch.stack([batched(lambda xb: model.log_prob_iwae(xb, k), x, batch_size, device)
                             for _ in range(repeats)])  # (R, N)
    mean, stderr, sem = nll_summary(per_image)
    return mean, stderr, sem, repeats, repeats_method(repeats, stderr)


def histogram_log_prob(train_x: torch.Tensor, x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(N,) log-probability of ``x`` under independent per-dimension categoricals fitted on ``train_x`` with add-one
    smoothing: p_d(v) = (count_d(v) + 1) / (N_train + L)."""
    flat_train = train_x.flatten(1).long()  # (M, D)
    M, D = flat_train.shape
    counts = torch.zeros(D, num_levels, dtype=torch.float64)
    counts.scatter_add_(1, flat_train.T, torch.ones(D, M, dtype=torch.float64))
    log_p = (counts + 1).log() - math.log(M + num_levels)  # (D, L)
    return log_p.gather(1, x.flatten(1).long().T).sum(0)  # (N,)


@register_evaluator("likelihood", config=LikelihoodConfig, result=LikelihoodResult)
def evaluate_likelihood(ctx, cfg: LikelihoodConfig) -> LikelihoodResult:
    model, info, x = ctx.model, ctx.dataset.info, ctx.test_x
    D, L = info.num_dims, info.num_levels
    baselines = dict(
        num_images=len(x), images_sha1=ctx.subset.indices_sha1, num_dims=D, num_levels=L,
        uniform_nll_nats=D * math.log(L),
        histogram_nll_nats=float(-histogram_log_prob(ctx.dataset.train.x, x, L).mean()),
    )
    none = dict(nll_nats=None, nll_bpd=None, stderr_nats=None, repeats=0, sem_images_nats=None, bound_estimator=None,
                bound_nats=None, bound_stderr_nats=None, bound_gap_nats=None, iwae_k=None)
    if model.likelihood is Likelihood.NONE:
        return LikelihoodResult(type="none", estimator="none", **none, **baselines)

    stochastic = model.likelihood is Likelihood.BOUND
    own = torch.stack([ctx.test_log_prob(cfg.batch_size) if r == 0 else  # (R, N); the first draw shared
                       batched(model.log_prob, x, cfg.batch_size, ctx.device)
                       for r in range(cfg.bound_repeats if stochastic else 1)])
    mean, stderr, sem = nll_summary(own, stochastic)
    method = repeats_method(len(own), stderr, stochastic)
    out = LikelihoodResult(type=model.likelihood.value, estimator=model.estimator, nll_nats=mean,
                           nll_bpd=float(nats_to_bits_per_dim(mean, D)), stderr_nats=stderr, repeats=len(own),
                           sem_images_nats=sem, bound_estimator=None, bound_nats=None, bound_stderr_nats=None,
                           bound_gap_nats=None, iwae_k=None, stderr_method=method, **baselines)
    if model.supports_iwae:
        k = iwae_k_for(model, cfg.iwae_k, cfg.iwae_k_overrides)
        iw = importance_weighted(model, x, k, cfg.iwae_repeats, cfg.batch_size, ctx.device)
        iw_mean, iw_stderr, iw_sem, iw_repeats, out.stderr_method = iw
        out.bound_estimator, out.bound_nats, out.bound_stderr_nats = model.estimator, mean, stderr
        out.estimator = f"{getattr(model, 'iwae_estimator', 'IWAE')}-{k}"
        out.nll_nats, out.nll_bpd = iw_mean, float(nats_to_bits_per_dim(iw_mean, D))
        out.stderr_nats, out.repeats, out.sem_images_nats, out.iwae_k = iw_stderr, iw_repeats, iw_sem, k
        out.bound_gap_nats = mean - iw_mean
    return out

