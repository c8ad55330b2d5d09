"""The one contract every dgmbench model follows, and the model registry.

A model is an ``nn.Module`` that declares, as class attributes, what it can do (the evaluator reads these
declarations; it never probes with ``hasattr``):

* ``likelihood`` — :class:`Likelihood.EXACT` (``log_prob`` is log p(x)), ``BOUND`` (``log_prob`` is a lower
  bound such as the ELBO), or ``NONE``;
* ``can_sample`` — ``sample(num_samples)`` draws images;
* ``can_embed`` — ``embed(x)`` gives a representation for the linear probe.

Public methods validate their input and call the private ``_log_prob`` / ``_sample`` / ``_embed`` that each
family implements (the nflows pattern). Every image ``x`` is a tensor of integer levels ``0..L-1`` of shape
``(B, C, H, W)`` — the data's own discrete values — so every log-probability is on one scale (docs/design.md).

Training: the shared trainer calls ``train_step(x, optimizers)``. The default takes one gradient step on
``loss(x)``; families with their own update (GAN, contrastive) override ``train_step`` and
``configure_optimizers`` instead of adding flags to the trainer.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

import torch
from torch import nn

from ..data import DatasetInfo
from ..distributions import log_mean_exp
from ..optim import Adam, Optimizer
from . import MODELS  # the registry lives in the package's __init__, which imports no torch


class Likelihood(str, enum.Enum):
    EXACT = "exact"  # log_prob(x) = log p(x) on the discrete data
    BOUND = "bound"  # log_prob(x) ≤ log p(x) (ELBO, dequantisation bound, diffusion VLB)
    NONE = "none"  # no likelihood (implicit models, encoders)


class GenerativeModel(nn.Module):
    # --- declarations, overridden by each family ---------------------------------------------------------
    name: ClassVar[str] = ""  # set by @register_model
    family: ClassVar[str] = ""  # row label in the comparison tables, e.g. "prescribed (VAE)"
    description: ClassVar[str] = ""  # one line for `dgmbench list`
    loss_name: ClassVar[str] = "training loss"  # what train_step's "loss" is, with its unit (curves, tables)
    Config: ClassVar[type]  # the family's hyperparameter dataclass
    likelihood: ClassVar[Likelihood] = Likelihood.NONE
    estimator: ClassVar[str] = "none"  # how log_prob is obtained: "exact", "ELBO", "dequantised bound", ...
    supports_iwae: ClassVar[bool] = False  # latent-variable families: log_prob_iwae(x, k) is defined
    iwae_weights: ClassVar[bool] = False  # iwae_log_weights(x, k) gives the k terms of log_prob_iwae (one draw's s.e.)
    autoregressive: ClassVar[bool] = False  # conditional_logits(x) gives every p(x_d | x_<d) (lossless coding)
    lossy: ClassVar[bool] = False  # reconstruct(x) and latent_rate_nats(x) are defined (lossy compression)
    discrete_latent: ClassVar[bool] = False  # to_latent/from_latent: a bijection of the integer images, with
    # P(z) given group by group by latent_log_pmf (discrete flows; lossless coding through z)
    can_sample: ClassVar[bool] = False
    can_embed: ClassVar[bool] = False
    embed_note: ClassVar[str] = ""  # what embed() returns, or why the family cannot embed
    closed_form: ClassVar[bool] = False  # fitted in closed form (one pass), not by gradient steps (e.g. PCA)
    train_defaults: ClassVar[dict[str, Any]] = {}  # family budget: overrides of TrainConfig defaults

    def __init__(self, cfg, info: DatasetInfo):
        super().__init__()
        self.cfg = cfg
        self.info = info

    # --- training ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar objective to minimise on a batch of integer images, and floats to log."""
        raise NotImplementedError

    def configure_optimizers(self, train_cfg) -> list[Optimizer]:
        """The optimizers ``train_step`` takes. dgmbench's Adam is torch's update without torch.optim's import of
        torch._dynamo (dgmbench/optim.py); a plugin may return any torch.optim optimizer instead."""
        return [Adam(self.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)]

    def train_step(self, x: torch.Tensor, optimizers: list[Optimizer], train_cfg) -> dict[str, float]:
        """One update on a batch. Returns the floats to log; ``"loss"`` is the curve the trainer tracks."""
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss, logs = self.loss(x)
        loss.backward()
        if train_cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), train_cfg.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), **logs}

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B,) per-image score, lower is better, for early stopping; ``None`` = no early stopping.

        Likelihood families default to the negative log-likelihood (or bound) in nats.
        """
        if self.likelihood is Likelihood.NONE:
            return None
        return -self.log_prob(x)

    @property
    def validation_is_nll(self) -> bool:
        """Whether ``validation_score`` is a negative log-likelihood (or bound) in nats, loggable as bits/dim."""
        return self.likelihood is not Likelihood.NONE

    def check_diverged(self, epoch_logs: dict[str, float]) -> str | None:
        """Family-specific divergence test after each epoch (e.g. GAN mode collapse); a reason or None.

        The trainer already ends runs whose logged values are NaN/inf.
        """
        return None

    # --- the public contract -----------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x) in nats (exact) or a lower bound on it, per ``likelihood``."""
        if self.likelihood is Likelihood.NONE:
            raise TypeError(f"model {self.name!r} has no likelihood (likelihood = none)")
        return self._log_prob(self.check_input(x))

    def log_prob_iwae(self, x: torch.Tensor, k: int, **kwargs) -> torch.Tensor:
        """(B,) importance-weighted bound with k samples (``supports_iwae`` families): the log-mean-exp over j of
        ``iwae_log_weights`` (``kwargs`` go to it, e.g. a chunk size), so the bound and the weights its standard
        error is taken from are one computation. A family that gives no weights overrides this instead."""
        if not self.supports_iwae:
            raise TypeError(f"model {self.name!r} has no importance-weighted bound (supports_iwae = False)")
        return log_mean_exp(self.iwae_log_weights(x, k, **kwargs), dim=0)

    def iwae_log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """(k, B) log importance weights log w_j = log p(x, z_j) − log q(z_j | x), z_j ~ q(· | x), whose
        log-mean-exp over j is ``log_prob_iwae`` (``iwae_weights`` families): the evaluator's jackknife s.e. needs
        the terms, not only their log-mean-exp."""
        raise TypeError(f"model {self.name!r} gives no importance weights (iwae_weights = False)")

    def conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C, H, W) logits of p(x_d | x_<d) for every position d (``autoregressive`` families).

        Order: raster over (h, w), and channels 0..C-1 within a pixel; the logits at position d depend only on
        the values of ``x`` at earlier positions, so a decoder can rebuild ``x`` one position at a time.
        """
        raise TypeError(f"model {self.name!r} is not autoregressive")

    def sample_naive(self, num_samples: int) -> torch.Tensor:
        """Samples by full recomputation of the network per position, the reference for a cached fast path
        (``autoregressive`` families); identical to ``sample`` for the same weights and seed."""
        raise TypeError(f"model {self.name!r} is not autoregressive")

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x), (B, C, H, W) integer levels, for a bijection f of the integer images (``discrete_latent``)."""
        raise TypeError(f"model {self.name!r} has no discrete latent (discrete_latent = False)")

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """x = f⁻¹(z) (``discrete_latent`` families)."""
        raise TypeError(f"model {self.name!r} has no discrete latent (discrete_latent = False)")

    @property
    def latent_groups(self) -> list[torch.Tensor]:
        """(C, H, W) boolean masks partitioning z, in decoding order (``discrete_latent`` families)."""
        raise TypeError(f"model {self.name!r} has no discrete latent (discrete_latent = False)")

    def latent_log_pmf(self, z: torch.Tensor, group: int) -> torch.Tensor:
        """(B, L, C, H, W) log P(z_d = k | z of earlier groups) for every level k, read at ``group``'s positions;
        only earlier groups of ``z`` may be read (``discrete_latent`` families). log p(x) = Σ_groups of these."""
        raise TypeError(f"model {self.name!r} has no discrete latent (discrete_latent = False)")

    def reconstruct(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """(B, C, H, W) float reconstruction in level units from the latent code (``lossy`` families): at the
        posterior mean, or with ``sample`` at a draw z ~ q(z|x), the latent whose cost ``latent_rate_nats`` is."""
        raise TypeError(f"model {self.name!r} does not reconstruct (lossy = False)")

    def latent_rate_nats(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) KL(q(z|x) ‖ p(z)) in nats: the rate of the latent code (``lossy`` families)."""
        raise TypeError(f"model {self.name!r} has no latent code (lossy = False)")

    def sample(self, num_samples: int) -> torch.Tensor:
        """(num_samples, C, H, W) int64 images with values in 0..L-1."""
        if not self.can_sample:
            raise TypeError(f"model {self.name!r} cannot sample")
        if num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
        out = self._sample(num_samples)
        assert out.shape == (num_samples, *self.info.shape), out.shape
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) features of each image for the linear probe (deterministic, eval mode)."""
        if not self.can_embed:
            raise TypeError(f"model {self.name!r} gives no representation: {self.embed_note or 'not declared'}")
        return self._embed(self.check_input(x))

    @property
    def sampling_passes(self) -> int:
        """Network evaluations per sample (1 for one-shot decoders, D for an ARM, T for diffusion)."""
        return 1

    # --- what families implement -------------------------------------------------------------------------
    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, num_samples: int) -> torch.Tensor:
        raise NotImplementedError

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- helpers -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.info.shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.info.shape))}), got {tuple(x.shape)}")
        if x.is_floating_point():
            raise ValueError("expected integer pixel levels (uint8/int64), got floats; pass the dataset's values")
        return x.long()


def register_model(name: str):
    """Class decorator: register a :class:`GenerativeModel` under ``name`` (duplicates are refused)."""

    def decorator(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"model {name!r} must define a dataclass `Config` of hyperparameters")
        cls.name = name
        return MODELS.register(name)(cls)

    return decorator


def list_models() -> list[str]:
    return MODELS.names()


def get_model(name: str, info: DatasetInfo, **hparams) -> GenerativeModel:
    """Build model ``name`` for a dataset; unknown hyperparameters fail with the valid ones listed."""
    cls = MODELS.get(name)
    from ..config import build_dataclass  # late import: config imports the registries

    return cls(build_dataclass(cls.Config, hparams, where=f"hparams.{name}"), info)
