"""Normalisation, checked (evaluator ``normalisation``): does the likelihood a family claims sum to one?

A code's lengths ℓ(x) = −log₂ p(x) are realisable (Kraft) iff Σ_x p(x) ≤ 1, and waste nothing iff Σ_x p(x) = 1:
a family that claims an exact likelihood must normalise; a bound must give Σ ≤ 1. Three checks:

* **fresh models on an enumerable space.** On a space small enough to enumerate every image (3 levels on 1×2×2:
  81 images) we sum exp(log_prob) over all of them, for a fresh model of the family's default config and of the
  run's config.
* **trained on that space** (exact families). The same model of the run's config after ``toy_train_steps`` steps of its own
  ``train_step`` (the run's optimiser settings) on draws from a fixed skewed distribution over the space, so a
  property that only breaks once weights move (a discrete flow's couplings, a mask that only leaks for non-zero
  weights) is exercised.
* **the trained checkpoint itself**, on the test subset, where its weights fit the data: an autoregressive
  family's conditionals must be causal (changing x_d moves no conditional p(x_e | x_<e) with e ≤ d; checked at
  ``causal_positions`` positions), and a discrete latent family's f must be a bijection (f⁻¹(f(x)) = x) whose
  prior tables each sum to one; for it we also report the NLL of the prior alone (z = x, couplings skipped), so
  the gain the learned couplings bring is a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.base import Likelihood
from . import Result, check_iwae_k_overrides, iwae_k_for, register_evaluator


@dataclass
class NormalisationConfig:
    spaces: list[list[int]] = field(default_factory=lambda: [[1, 2, 2, 3], [1, 4, 4, 2]])  # [C, H, W, levels], first that builds
    bound_repeats: int = 4  # stochastic bounds (ELBO, VLB) are averaged over this many draws per image
    iwae_k: int = 256  # importance samples for the IWAE-k sum (supports_iwae families)
    # per family: diffusion's IW-VLB-k costs k·T passes per image (T = 100), so 16 trajectories (26 s → 2 s a run)
    iwae_k_overrides: dict[str, int] = field(default_factory=lambda: {"diffusion": 16})
    toy_train_steps: int = 30  # steps of train_step on the toy space before the "trained" sum (0 = skip)
    causal_positions: int = 16  # positions perturbed in the trained checkpoint's causality check
    check_images: int = 16  # test images of the trained-checkpoint checks

    def validate(self):
        if any(len(s) != 4 or min(s) < 1 or s[3] < 2 for s in self.spaces):
            raise ValueError(f"spaces must be [C, H, W, levels] with levels ≥ 2, got {self.spaces}")
        if self.bound_repeats < 1 or self.iwae_k < 1:
            raise ValueError("bound_repeats and iwae_k must be ≥ 1")
        check_iwae_k_overrides(self.iwae_k_overrides)
        if min(self.toy_train_steps, self.causal_positions, self.check_images) < 0:
            raise ValueError("toy_train_steps, causal_positions and check_images must be ≥ 0")


@dataclass
class SpaceSum(Result):
    space: list[int] | None  # [C, H, W, levels] of the enumerated space (None: no space could be built)
    num_images: int | None  # L^D images summed over
    sum_p: float | None  # Σ exp(log_prob(x)) (a bound's log-value averaged over draws first)
    sum_p_iwae: float | None  # Σ exp(IWAE-k): an estimate of Σp = 1, not a bound (supports_iwae families)
    error: str | None  # why no space could be built
    iwae_k: int | None = None  # k of that sum (None: no importance-weighted sum)


@dataclass
class CheckpointCheck(Result):
    property: str  # what was checked on the trained weights
    num_images: int  # test images used
    num_positions: int  # positions (causality) or values (bijection) checked
    max_violation: float  # causality: max |Δ logit| at e ≤ d; bijection: fraction of values not restored
    passed: bool  # max_violation is 0 (within 1e-6 for logits)
    max_table_error: float | None  # discrete latent: max |Σ_k P(z_d = k) − 1| of the prior's tables
    nll_nats: float | None  # discrete latent: −log P(x) of the flow on those images, nats/image
    prior_alone_nll_nats: float | None  # −log P_prior(z = x): the prior without the couplings, nats/image


@dataclass
class NormalisationResult(Result):
    type: str  # the declared likelihood: exact | bound
    fresh_default: SpaceSum  # a fresh model of the family's default config
    fresh_run_config: SpaceSum  # a fresh model of the run's config
    toy_trained: SpaceSum | None  # that model after toy_train_steps steps on the toy space
    checkpoint: CheckpointCheck | None  # the trained checkpoint (autoregressive / discrete-latent families)

    def sums(self) -> list[float]:
        """Every Σp measured (for the matrix's "exact" test)."""
        spaces = (self.fresh_default, self.fresh_run_config, self.toy_trained)
        return [s.sum_p for s in spaces if s is not None and s.sum_p is not None]


def enumerate_images(shape: tuple[int, int, int], num_levels: int) -> torch.Tensor:
    """Every image of ``shape`` with values 0..L−1: (L^D, C, H, W) int64, the first dimension varying slowest."""
    D = shape[0] * shape[1] * shape[2]
    grids = torch.cartesian_prod(*[torch.arange(num_levels)] * D) if D > 1 else torch.arange(num_levels)[:, None]
    return grids.reshape(-1, *shape).long()


@torch.no_grad()
def total_probability(model, *, bound_repeats: int = 1, iwae_k: int = 0, batch_size: int = 4096) -> dict:
    """Σ_x exp(log_prob(x)) over every image of ``model.info`` (and Σ exp(IWAE-k) with ``iwae_k``), in float64.

    ``bound_repeats`` > 1 averages a stochastic bound's log-value over draws before exponentiating (the ELBO is
    an expectation; one draw can exceed log p(x)), so ``sum_p`` ≤ 1 for a valid bound. ``sum_p_iwae`` is not a
    bound: exp(IWAE-k) is an unbiased, heavy-tailed estimate of p(x), so its sum estimates Σp = 1 (noisily).
    """
    x = enumerate_images(model.info.shape, model.info.num_levels)
    log_p, log_iwae = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(model.device)
        draws = torch.stack([model.log_prob(xb).double().cpu() for _ in range(bound_repeats)])  # (R, B)
        log_p.append(draws.mean(0))
        if iwae_k:
            log_iwae.append(model.log_prob_iwae(xb, iwae_k).double().cpu())
    out = {"num_images": len(x), "sum_p": float(torch.cat(log_p).exp().sum()), "sum_p_iwae": None}
    if iwae_k:
        out["sum_p_iwae"] = float(torch.cat(log_iwae).exp().sum())
    return out


def _space_model(cls, hparams, spaces, device):
    """(model, space) for the first of ``spaces`` the architecture can be built at, or (None, errors)."""
    from ..data import DatasetInfo

    errors = []
    for C, H, W, L in spaces:
        info = DatasetInfo(f"toy-{C}x{H}x{W}-{L}", (C, H, W), L, 1, "every image of a tiny space")
        try:
            return cls(hparams, info).to(device), [C, H, W, L]
        except Exception as err:  # an architecture that cannot be built this small; try the next space
            errors.append(f"{C}x{H}x{W}/{L}: {type(err).__name__}: {err}")
    return None, "; ".join(errors)


def _space_sum(model, space, cfg: NormalisationConfig) -> SpaceSum:
    cls = type(model)
    k = iwae_k_for(model, cfg.iwae_k, cfg.iwae_k_overrides) if cls.supports_iwae else 0
    res = total_probability(model.eval(), bound_repeats=cfg.bound_repeats if cls.likelihood is Likelihood.BOUND else 1,
                            iwae_k=k)
    return SpaceSum(space=space, error=None, iwae_k=k or None, **res)


def train_on_space(model, train_cfg, steps: int, seed: int = 0) -> None:
    """``steps`` of the model's own train_step on batches of 64 draws from a fixed skewed distribution over its
    space (each dimension an independent categorical with random probabilities)."""
    info = model.info
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(info.num_dims, info.num_levels, generator=gen) ** 3 + 1e-3  # (D, L), skewed
    opts = model.configure_optimizers(train_cfg)
    model.train()
    for _ in range(steps):
        x = torch.multinomial(probs, 64, replacement=True, generator=gen).T.reshape(64, *info.shape)
        model.train_step(x.to(model.device), opts, train_cfg)
    model.eval()


@torch.no_grad()
def causality_check(model, x: torch.Tensor, num_positions: int, seed: int = 0) -> CheckpointCheck:
    """Change x_d (d at ``num_positions`` random positions of the coding order) and measure how far the
    conditionals at positions e ≤ d move: 0 for a causal model."""
    from .compression import positions

    order = positions(model.info.shape)  # [(c, h, w)] in coding order
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(order), size=min(num_positions, len(order)), replace=False))
    base = model.conditional_logits(x).double()  # (B, L, C, H, W)
    worst = 0.0
    for d in chosen:
        c, h, w = order[d]
        x2 = x.clone()  # the next level, cyclically; in int64, since 255 + 1 wraps (and % 256 divides by 0) in uint8
        x2[:, c, h, w] = ((x2[:, c, h, w].long() + 1) % model.info.num_levels).to(x2.dtype)
        moved = (model.conditional_logits(x2).double() - base).abs()  # (B, L, C, H, W)
        for e in range(d + 1):
            ce, he, we = order[e]
            worst = max(worst, float(moved[:, :, ce, he, we].max()))
    return CheckpointCheck("causal conditionals", len(x), len(chosen), worst, worst <= 1e-6, None, None, None)


@torch.no_grad()
def bijection_check(model, x: torch.Tensor) -> CheckpointCheck:
    """f⁻¹(f(x)) = x on ``x``; the prior's tables sum to one; the NLL with and without the couplings."""
    z = model.to_latent(x)
    restored = model.from_latent(z)
    bad = float((restored != x).float().mean())
    table_err, prior_alone = 0.0, torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for g, mask in enumerate(model.latent_groups):
        log_pmf = model.latent_log_pmf(x, g).double()  # (B, L, C, H, W), the prior evaluated at z = x
        table_err = max(table_err, float(log_pmf.logsumexp(1).exp().sub(1).abs()[:, mask].max()))
        picked = log_pmf.gather(1, x.long().unsqueeze(1)).squeeze(1)  # (B, C, H, W)
        prior_alone += (picked * mask).flatten(1).sum(1)
    nll = float(-model.log_prob(x).double().mean())
    return CheckpointCheck("bijection f⁻¹(f(x)) = x", len(x), x[0].numel(), bad, bad == 0.0, table_err, nll,
                           float(-prior_alone.mean()))


@register_evaluator("normalisation", config=NormalisationConfig, result=NormalisationResult)
def evaluate_normalisation(ctx, cfg: NormalisationConfig) -> NormalisationResult | None:
    cls = type(ctx.model)
    if cls.likelihood is Likelihood.NONE:
        return None
    sums: dict[str, SpaceSum | None] = {}
    for label, hparams in (("fresh_default", cls.Config()), ("fresh_run_config", ctx.model.cfg)):
        model, space = _space_model(cls, hparams, cfg.spaces, ctx.device)
        sums[label] = _space_sum(model, space, cfg) if model is not None else SpaceSum(None, None, None, None, space)
    sums["toy_trained"] = None
    # Exact families only: a trained bound is nearly tight, and the noise of its draws can then push the sum of
    # exp(bound) past 1 without any fault; an exact likelihood must sum to 1 whatever the weights.
    if cfg.toy_train_steps and not cls.closed_form and cls.likelihood is Likelihood.EXACT:
        model, space = _space_model(cls, ctx.model.cfg, cfg.spaces, ctx.device)
        if model is not None:
            train_on_space(model, ctx.run.train, cfg.toy_train_steps)
            sums["toy_trained"] = _space_sum(model, space, cfg)
    check = None
    x = ctx.test_x[: cfg.check_images].to(ctx.device)
    if cfg.check_images and ctx.model.autoregressive:
        check = causality_check(ctx.model, x, cfg.causal_positions)
    elif cfg.check_images and ctx.model.discrete_latent:
        check = bijection_check(ctx.model, x)
    return NormalisationResult(type=cls.likelihood.value, checkpoint=check, **sums)
