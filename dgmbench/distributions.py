"""Log-densities and unit conversions shared by every family (defined once, here).

Conventions: images arrive as integer levels ``x ∈ {0..L-1}`` of shape ``(B, C, H, W)``; log-probabilities are
in nats and summed over dimensions, returning ``(B,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------- unit changes
def nats_to_bits_per_dim(nats: float | torch.Tensor, num_dims: int):
    """Negative log-likelihood per image in nats → bits per dimension: nats / (D · ln 2)."""
    return nats / (num_dims * LOG2)


def bits_per_dim_to_nats(bpd: float | torch.Tensor, num_dims: int):
    return bpd * num_dims * LOG2


def to_unit_interval(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integer levels → floats in [0, 1] (level k ↦ k / (L-1))."""
    return x.float() / (num_levels - 1)


def to_symmetric(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integer levels → floats in [-1, 1], the centres of the L bins of width 2/(L-1)... edges at ±1 ± bin/2."""
    return 2.0 * x.float() / (num_levels - 1) - 1.0


def from_symmetric(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Floats in [-1, 1] → nearest integer level (the inverse of :func:`to_symmetric`, with clamping)."""
    return torch.round((x.clamp(-1, 1) + 1.0) * (num_levels - 1) / 2.0).long()


# --------------------------------------------------------------------------------------- log-densities
def log_normal_diag(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x | mean, exp(log_var)); sum over the dimensions you need."""
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def log_standard_normal(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + x**2)


def categorical_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Cat(x | softmax(logits)), summed over all dimensions but the batch.

    Args:
        logits: (B, L, *dims) unnormalised log-probabilities over the L levels.
        x: (B, *dims) integer levels.
    Returns:
        (B,) log-probabilities in nats.
    """
    return -F.cross_entropy(logits, x.long(), reduction="none").flatten(1).sum(1)


def discretized_logistic_log_pmf(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Elementwise log P(x) under a logistic(mean, scale) discretised into L bins on [-1, 1] (PixelCNN++,
    Salimans et al. 2017).

    Bin k covers [c_k - h, c_k + h] with centres c_k = 2k/(L-1) - 1 and h = 1/(L-1); the first and last bins
    extend to ∓∞ so the L probabilities sum to exactly one.

    Args:
        mean, log_scale: (B, *dims) parameters in the [-1, 1] scale.
        x: (B, *dims) integer levels; a float tensor holding integers stays differentiable in x (the bin moves
            with it: the straight-through gradient integer discrete flows train with).
    Returns:
        (B, *dims) log-probabilities in nats.
    """
    xv = x if x.is_floating_point() else x.long()
    # Bin edges from integers, so bin k's upper edge is exactly bin k+1's lower edge and the bins tile [-1, 1].
    upper = (2 * xv + 1).to(mean.dtype) / (num_levels - 1) - 1.0
    lower = (2 * xv - 1).to(mean.dtype) / (num_levels - 1) - 1.0
    inv_s = torch.exp(-log_scale)
    plus = inv_s * (upper - mean)
    minus = inv_s * (lower - mean)
    log_cdf_plus = F.logsigmoid(plus)  # log P(X ≤ upper edge), used for the first bin
    log_one_minus_cdf_minus = -F.softplus(minus)  # log P(X > lower edge), used for the last bin
    # log(σ(plus) − σ(minus)) = log σ(plus) + log σ(−minus) + log(1 − e^{minus − plus}): exact and stable in the tails.
    log_mid = F.logsigmoid(plus) + F.logsigmoid(-minus) + torch.log(-torch.expm1(minus - plus))
    xl = xv.detach().round().long() if xv.is_floating_point() else xv
    return torch.where(xl == 0, log_cdf_plus, torch.where(xl == num_levels - 1, log_one_minus_cdf_minus, log_mid))


def discretized_logistic_log_prob(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(B,) log P(x) summed over all dimensions but the batch (see :func:`discretized_logistic_log_pmf`)."""
    return discretized_logistic_log_pmf(mean, log_scale, x, num_levels).flatten(1).sum(1)


def log_mean_exp(a: torch.Tensor, dim: int) -> torch.Tensor:
    """log(mean(exp(a))) along ``dim``, stably."""
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])
