"""Masked image modelling: hide random patches and predict them from the rest (context encoders, Pathak et al.
2016; MAE, He et al. 2022; BERT's masked-token objective on pixels).

A mask m ∈ {0, 1}^{H×W} (1 = visible) hides a fixed fraction ``mask_ratio`` of the non-overlapping
``patch_size`` × ``patch_size`` patches, chosen uniformly per image. The encoder sees [m ⊙ x ; m] (the mask as
an extra channel, so a hidden pixel is told apart from a black one) and a decoder predicts every pixel's
level; the loss counts only the hidden pixels,

    L = −Σ_{d : m_d = 0} log p(x_d | m ⊙ x, m)      (nats per image, categorical over the L levels),

so the model cannot score by copying what it sees: unlike the denoising AE (``dae``, which reconstructs every
pixel from i.i.d. pixel dropout), it must infer whole missing parts of a shape from its context.
The representation is the encoder output with nothing hidden, f([x ; 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distributions import to_unit_interval
from .base import GenerativeModel, register_model
from .ssl import BackboneConfig, ConvEncoder, mlp_head


def patch_mask(batch: int, height: int, width: int, patch_size: int, mask_ratio: float,
               device: torch.device | None = None) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 = visible, hiding round(mask_ratio · P) of the P patches of each image.

    Patches tile the image from the top-left corner; edge patches are cropped when the side is not a multiple.
    """
    ph, pw = -(-height // patch_size), -(-width // patch_size)  # patches per column / row (ceil)
    num_patches = ph * pw
    num_hidden = int(round(mask_ratio * num_patches))
    rank = torch.rand(batch, num_patches, device=device).argsort(1).argsort(1)  # a uniform permutation
    visible = (rank >= num_hidden).float().view(batch, 1, ph, pw)
    m = visible.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    return m[:, :, :height, :width]


@dataclass
class MaskedConfig(BackboneConfig):
    patch_size: int = 2  # side of the square patches hidden together (2 → 16 patches on 8×8 digits)
    mask_ratio: float = 0.5  # fraction of the patches hidden in each image
    hidden_dim: int = 256  # width of the decoder's hidden layer

    def validate(self):
        if min(self.channels, self.feature_dim, self.hidden_dim, self.patch_size) < 1:
            raise ValueError("channels, feature_dim, hidden_dim and patch_size must be ≥ 1")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


@register_model("masked")
class MaskedModel(GenerativeModel):
    family = "self-supervised (masked modelling)"
    loss_name = "masked-pixel NLL (nats/image)"
    description = "Masked modelling: hide random patches, predict their levels from the rest (conv encoder)"
    Config = MaskedConfig
    can_embed = True
    embed_note = "conv encoder output with nothing hidden, f([x ; 1])"
    train_defaults = {"max_epochs": 80, "patience": 0, "batch_size": 64, "lr": 3e-3}

    def __init__(self, cfg: MaskedConfig, info):
        super().__init__(cfg, info)
        C, H, W = info.shape
        self.encoder = ConvEncoder(C + 1, H, W, cfg.channels, cfg.feature_dim)
        self.decoder = mlp_head(cfg.feature_dim, cfg.hidden_dim, info.num_dims * info.num_levels)

    def masked_nll(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B,) −Σ over hidden pixels of log p(x_d | visible part), for integer images x and mask m (B, 1, H, W)."""
        B = x.shape[0]
        u = to_unit_interval(x, self.info.num_levels)  # (B, C, H, W)
        logits = self.decoder(self.encoder(torch.cat([m * u, m], dim=1)))  # (B, L·D)
        logits = logits.view(B, self.info.num_levels, *self.info.shape)  # (B, L, C, H, W)
        nll = F.cross_entropy(logits, x, reduction="none")  # (B, C, H, W)
        return (nll * (1 - m)).flatten(1).sum(1)

    def loss(self, x):
        x = self.check_input(x)
        _, H, W = self.info.shape
        m = patch_mask(x.shape[0], H, W, self.cfg.patch_size, self.cfg.mask_ratio, x.device)
        return self.masked_nll(x, m).mean(), {}

    def _embed(self, x):
        u = to_unit_interval(x, self.info.num_levels)
        return self.encoder(torch.cat([u, torch.ones_like(u[:, :1])], dim=1))  # (B, F)
