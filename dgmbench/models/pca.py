"""PCA: the linear auto-encoder baseline, fitted in closed form.

A linear auto-encoder x ↦ z = Wᵀ(x − μ) ↦ x̂ = μ + W z with W ∈ ℝ^{D×k} and the squared reconstruction error

    E ‖x − μ − W Wᵀ (x − μ)‖²

is minimised (Baldi & Hornik 1989; Eckart–Young) by μ = the data mean and W spanning the top-k eigenvectors
of the covariance Σ = E[(x − μ)(x − μ)ᵀ]; the error left is the sum of the D − k smallest eigenvalues. So
there is nothing to learn by gradient descent: one pass over the training split accumulates the sufficient
statistics n, Σ_i x_i and Σ_i x_i x_iᵀ (float64 buffers, so the result does not depend on the batch order
beyond rounding), and the components follow from an eigendecomposition of

    Σ̂ = (Σ_i x_i x_iᵀ − n μ̂ μ̂ᵀ) / (n − 1),    μ̂ = Σ_i x_i / n

(the unbiased covariance, as scikit-learn's ``explained_variance_``). Pixels are scaled to [-1, 1] first
(:func:`to_symmetric`), the same input scale as the VAE's encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributions import to_symmetric
from .base import GenerativeModel, register_model


@dataclass
class PCAConfig:
    num_components: int = 16  # k, principal components kept = size of the representation (≤ D)

    def validate(self):
        if self.num_components < 1:
            raise ValueError(f"num_components must be ≥ 1, got {self.num_components}")


def principal_components(count: torch.Tensor, total: torch.Tensor, total_outer: torch.Tensor, k: int):
    """(mean (D,), components (D, k), explained variance (k,)) from the streamed moments, all float64.

    Components are ordered by decreasing variance; each one's sign is fixed so that its entry of largest
    magnitude is positive, so the result is deterministic (eigenvectors are only defined up to sign).
    """
    n = float(count)
    mean = total / n
    cov = (total_outer - n * torch.outer(mean, mean)) / max(n - 1.0, 1.0)  # (D, D), unbiased
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]  # (k,), (D, k)
    pivot = evecs.abs().argmax(0)  # (k,)
    signs = torch.sign(evecs[pivot, torch.arange(k)])
    return mean, evecs * signs, evals.clamp(min=0.0)


@register_model("pca")
class PCA(GenerativeModel):
    family = "self-supervised (linear AE / PCA)"
    loss_name = "squared reconstruction error (per image, pixels in [-1, 1])"
    description = "PCA: the optimal linear auto-encoder, closed form from moments streamed over one epoch"
    Config = PCAConfig
    can_embed = True
    embed_note = "projection on the top-k principal components, Wᵀ(x − μ)"
    closed_form = True
    # One pass accumulates the moments; large batches only mean fewer eigendecompositions (one per batch).
    train_defaults = {"max_epochs": 1, "patience": 0, "batch_size": 1000}

    def __init__(self, cfg: PCAConfig, info):
        super().__init__(cfg, info)
        D = info.num_dims
        if cfg.num_components > D:
            raise ValueError(f"num_components = {cfg.num_components} > {D} dimensions of {info.name}")
        k = cfg.num_components
        # Sufficient statistics (float64) and the fitted solution; all buffers, so checkpoints hold them.
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(D, dtype=torch.float64))  # Σ_i x_i
        self.register_buffer("total_outer", torch.zeros(D, D, dtype=torch.float64))  # Σ_i x_i x_iᵀ
        self.register_buffer("mean", torch.zeros(D))  # μ̂
        self.register_buffer("components", torch.zeros(D, k))  # W, orthonormal columns (zero until fitted)
        self.register_buffer("explained_variance", torch.zeros(k, dtype=torch.float64))  # top-k eigenvalues

    @property
    def device(self) -> torch.device:
        return self.count.device  # no parameters

    def configure_optimizers(self, train_cfg) -> list:
        return []  # closed form: no gradient steps

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return to_symmetric(x, self.info.num_levels).flatten(1)  # (B, D) in [-1, 1]

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor) -> None:
        """Add a batch of integer images to the moments and refit the components from them."""
        h = self._flat(self.check_input(x)).double()  # (B, D)
        self.count += h.shape[0]
        self.total += h.sum(0)
        self.total_outer += h.T @ h
        mean, comps, var = principal_components(self.count, self.total, self.total_outer, self.cfg.num_components)
        self.mean.copy_(mean)
        self.components.copy_(comps)
        self.explained_variance.copy_(var)

    def train_step(self, x, optimizers, train_cfg) -> dict[str, float]:
        self.accumulate(x)
        loss, logs = self.loss(x)
        return {"loss": float(loss), **logs}

    @torch.no_grad()
    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Squared reconstruction error ‖x − x̂‖² per image (in the [-1, 1] scale) with the current components."""
        h = self._flat(self.check_input(x))
        z = (h - self.mean) @ self.components  # (B, k)
        rec = self.mean + z @ self.components.T  # (B, D)
        return ((h - rec) ** 2).sum(1).mean(), {"explained_variance": float(self.explained_variance.sum())}

    def _embed(self, x):
        return (self._flat(x) - self.mean) @ self.components  # (B, k)
