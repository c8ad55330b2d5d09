"""Denoising auto-encoder (Vincent et al. 2008): learn features by undoing a corruption of the input.

The encoder f sees a corrupted image x̃ ~ q(x̃ | x) and a decoder g must give back the *clean* x. The three
corruptions of the lecture, selectable with ``corruption``, act on pixels scaled to [0, 1] (level k ↦ k/(L-1),
so 0 is the background of the digits):

* ``gaussian``   — additive noise:               x̃ = x + ε,          ε ~ N(0, σ² I)
* ``mask``       — salt / Bernoulli masking:      x̃ = m ⊙ x,          m_d ~ Bernoulli(1 − p) i.i.d.
* ``mask_input`` — masking, the mask as input:    x̃ = [m ⊙ x ; m]     (2C channels: a dropped pixel is told
  apart from a genuinely black one)

Reconstruction loss: the categorical negative log-likelihood of the clean levels under a per-pixel softmax
over the L levels, −Σ_d log p(x_d | x̃) in nats per image — the cross-entropy on the data's own discrete values,
as the VAE decoder (``recon = "mse"`` swaps in the squared error in the [0, 1] scale, cheaper when L = 256).

The representation is f of the *uncorrupted* input (for ``mask_input`` that is [x ; 1], nothing dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..distributions import categorical_log_prob, to_unit_interval
from .base import GenerativeModel, register_model
from .ssl import BackboneConfig, ConvEncoder, mlp_head


# ------------------------------------------------------------------------------------------- corruptions
def gaussian_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """x̃ = x + ε, ε ~ N(0, std²) elementwise. x: (B, C, H, W) floats."""
    return x + std * torch.randn_like(x)


def bernoulli_mask(x: torch.Tensor, drop_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(m ⊙ x, m) with m_d ~ Bernoulli(1 − drop_prob) i.i.d.: each value is kept untouched or set to 0."""
    m = (torch.rand_like(x) >= drop_prob).to(x.dtype)  # (B, C, H, W), 1 = kept
    return m * x, m


def mask_with_indicator(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """[m ⊙ x ; m]: the masked image and its mask stacked along channels, (B, 2C, H, W)."""
    xm, m = bernoulli_mask(x, drop_prob)
    return torch.cat([xm, m], dim=1)


@dataclass
class DAEConfig(BackboneConfig):
    corruption: Literal["gaussian", "mask", "mask_input"] = "gaussian"  # q(x̃|x), see the module docstring
    noise_std: float = 0.5  # σ of the additive Gaussian noise, in the [0, 1] pixel scale
    drop_prob: float = 0.5  # p, probability that a pixel is dropped (set to 0) by the masking corruptions
    hidden_dim: int = 256  # width of the decoder's hidden layer
    recon: Literal["categorical", "mse"] = "categorical"  # reconstruction loss on the clean x

    def validate(self):
        if self.channels < 1 or self.feature_dim < 1 or self.hidden_dim < 1:
            raise ValueError("channels, feature_dim and hidden_dim must be ≥ 1")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be ≥ 0, got {self.noise_std}")
        if not 0 <= self.drop_prob < 1:
            raise ValueError(f"drop_prob must be in [0, 1), got {self.drop_prob}")


@register_model("dae")
class DAE(GenerativeModel):
    family = "self-supervised (denoising AE)"
    loss_name = "denoising reconstruction NLL (nats/image)"
    description = "Denoising auto-encoder: conv encoder, Gaussian / masking / mask-as-input corruption"
    Config = DAEConfig
    can_embed = True
    embed_note = "conv encoder output on the clean image ([x ; 1] with mask_input)"
    train_defaults = {"max_epochs": 60, "patience": 0, "batch_size": 64, "lr": 1e-3}

    def __init__(self, cfg: DAEConfig, info):
        super().__init__(cfg, info)
        C, H, W = info.shape
        in_channels = 2 * C if cfg.corruption == "mask_input" else C
        self.encoder = ConvEncoder(in_channels, H, W, cfg.channels, cfg.feature_dim)
        out = info.num_dims * (info.num_levels if cfg.recon == "categorical" else 1)
        self.decoder = mlp_head(cfg.feature_dim, cfg.hidden_dim, out)

    def corrupt(self, u: torch.Tensor) -> torch.Tensor:
        """Draw x̃ ~ q(x̃|x) for images u (B, C, H, W) in [0, 1]."""
        if self.cfg.corruption == "gaussian":
            return gaussian_noise(u, self.cfg.noise_std)
        if self.cfg.corruption == "mask":
            return bernoulli_mask(u, self.cfg.drop_prob)[0]
        return mask_with_indicator(u, self.cfg.drop_prob)

    def reconstruction_nll(self, x: torch.Tensor, x_tilde: torch.Tensor) -> torch.Tensor:
        """(B,) reconstruction loss of the clean integer images x from the encoder input x̃."""
        params = self.decoder(self.encoder(x_tilde))  # (B, D·L) or (B, D)
        B = x.shape[0]
        if self.cfg.recon == "categorical":
            logits = params.view(B, self.info.num_levels, -1)  # (B, L, D)
            return -categorical_log_prob(logits, x.reshape(B, -1))
        return ((params - to_unit_interval(x, self.info.num_levels).flatten(1)) ** 2).sum(1)

    def loss(self, x):
        x = self.check_input(x)
        nll = self.reconstruction_nll(x, self.corrupt(to_unit_interval(x, self.info.num_levels)))
        return nll.mean(), {}

    def _embed(self, x):
        u = to_unit_interval(x, self.info.num_levels)  # (B, C, H, W)
        if self.cfg.corruption == "mask_input":
            u = torch.cat([u, torch.ones_like(u)], dim=1)  # nothing dropped
        return self.encoder(u)  # (B, F)
