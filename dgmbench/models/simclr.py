"""SimCLR: contrastive learning of representations (Chen et al., ICML 2020).

Each image x gives two views t(x), t'(x) under random augmentations; the encoder f (the representation,
h = f(x)) and a projection head g give z = g(f(t(x))). The NT-Xent loss treats the other view of the same
image as the positive and the remaining 2N − 2 views of the batch as negatives. With sim(u, v) = uᵀv / (‖u‖‖v‖)
and temperature τ, for the 2N views z_1..z_2N of a batch of N images, where view i's positive is p(i):

    ℓ_i = −log  exp(sim(z_i, z_p(i)) / τ)  /  Σ_{j ≠ i} exp(sim(z_i, z_j) / τ),     L = (1 / 2N) Σ_i ℓ_i.

The head is discarded after training: the probe reads h, the encoder output before g (Chen et al. found h
more linearly useful than z, which the loss makes invariant to the augmentations).

Augmentations, for small greyscale images in [0, 1] (background 0): a random affine map (rotation by up to
±``max_rotation`` degrees, zoom-in by a factor in [1, 1/``min_scale``] — a random resized crop — and a
translation by up to ``max_shift`` of the image side), additive Gaussian noise, and random erasing of a
rectangle (Zhong et al. 2020). Colour jitter and flips do not suit digits and are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..distributions import to_unit_interval
from .base import GenerativeModel, register_model
from .ssl import BackboneConfig, ConvEncoder, mlp_head


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two batches of projections, z1 and z2 (N, d), row i of each from the same image."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, d), unit norm
    sim = z @ z.T / temperature  # (2N, 2N) cosine similarities / τ
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))  # j ≠ i in the denominator
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # p(i)
    return F.cross_entropy(sim, positive)  # mean over the 2N anchors of ℓ_i


@dataclass
class Augment:
    """Random augmentation of a batch of images in [0, 1]; each image gets its own draw."""

    max_rotation: float = 15.0  # degrees
    min_scale: float = 0.7  # the crop's side as a fraction of the image (zoom-in up to 1 / min_scale)
    max_shift: float = 0.125  # translation, as a fraction of the side (1 pixel on 8×8)
    noise_std: float = 0.05  # additive Gaussian noise
    erase_prob: float = 0.5  # probability of erasing one rectangle
    erase_max: float = 0.4  # the erased rectangle's sides are up to this fraction of the image's

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        B, _, H, W = u.shape
        dev = u.device
        angle = (torch.rand(B, device=dev) * 2 - 1) * math.radians(self.max_rotation)  # (B,)
        scale = self.min_scale + (1 - self.min_scale) * torch.rand(B, device=dev)  # the grid spans a crop of side s
        shift = (torch.rand(B, 2, device=dev) * 2 - 1) * 2 * self.max_shift  # in [-1, 1] grid units (side = 2)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(u.shape), align_corners=False)  # (B, H, W, 2)
        v = F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        v = v + self.noise_std * torch.randn_like(v)
        # Random erasing: a rectangle with sides up to erase_max of the image's, at a uniform position.
        eh = (torch.rand(B, device=dev) * self.erase_max * H).long() + 1  # (B,)
        ew = (torch.rand(B, device=dev) * self.erase_max * W).long() + 1
        top = (torch.rand(B, device=dev) * (H - eh + 1)).long()
        left = (torch.rand(B, device=dev) * (W - ew + 1)).long()
        rows = torch.arange(H, device=dev).view(1, H, 1)
        cols = torch.arange(W, device=dev).view(1, 1, W)
        inside = ((rows >= top.view(B, 1, 1)) & (rows < (top + eh).view(B, 1, 1))
                  & (cols >= left.view(B, 1, 1)) & (cols < (left + ew).view(B, 1, 1)))  # (B, H, W)
        erase = inside & (torch.rand(B, 1, 1, device=dev) < self.erase_prob)
        return v.masked_fill(erase.unsqueeze(1), 0.0)


@dataclass
class SimCLRConfig(BackboneConfig):
    projection_dim: int = 64  # size of z = g(h), where the loss is computed
    projection_hidden: int = 128  # hidden width of the projection head g
    temperature: float = 0.5  # τ of NT-Xent
    max_rotation: float = 15.0  # augmentation: rotation range, degrees
    min_scale: float = 0.7  # augmentation: random-resized-crop side, fraction of the image
    max_shift: float = 0.125  # augmentation: translation, fraction of the side
    noise_std: float = 0.05  # augmentation: additive Gaussian noise in the [0, 1] scale
    erase_prob: float = 0.5  # augmentation: probability of random erasing
    erase_max: float = 0.4  # augmentation: largest erased side, fraction of the image

    def validate(self):
        if min(self.channels, self.feature_dim, self.projection_dim, self.projection_hidden) < 1:
            raise ValueError("channels, feature_dim, projection_dim and projection_hidden must be ≥ 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale}")
        if not 0 <= self.erase_prob <= 1 or not 0 <= self.erase_max <= 1:
            raise ValueError("erase_prob and erase_max must be in [0, 1]")


@register_model("simclr")
class SimCLR(GenerativeModel):
    family = "self-supervised (contrastive)"
    loss_name = "NT-Xent contrastive loss (nats/view)"
    description = "SimCLR: conv encoder + projection head, NT-Xent on two augmented views"
    Config = SimCLRConfig
    can_embed = True
    embed_note = "conv encoder output h, before the projection head"
    # Large batches give NT-Xent more negatives (Chen et al. 2020); 1000 digits → 4 steps per epoch.
    train_defaults = {"max_epochs": 100, "patience": 0, "batch_size": 256, "lr": 2e-3}

    def __init__(self, cfg: SimCLRConfig, info):
        super().__init__(cfg, info)
        C, H, W = info.shape
        self.encoder = ConvEncoder(C, H, W, cfg.channels, cfg.feature_dim)  # f
        self.head = mlp_head(cfg.feature_dim, cfg.projection_hidden, cfg.projection_dim)  # g, discarded
        self.augment = Augment(**{f.name: getattr(cfg, f.name) for f in fields(Augment)})  # same-named fields

    def loss(self, x):
        u = to_unit_interval(self.check_input(x), self.info.num_levels)  # (B, C, H, W)
        z1 = self.head(self.encoder(self.augment(u)))  # (B, d)
        z2 = self.head(self.encoder(self.augment(u)))
        loss = nt_xent(z1, z2, self.cfg.temperature)
        with torch.no_grad():  # how often the positive is the nearest view: a readable training signal
            z = F.normalize(torch.cat([z1, z2]), dim=1)
            sim = (z @ z.T).fill_diagonal_(-2.0)
            n = len(z1)
            hit = (sim.argmax(1) == torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device))
        return loss, {"positive_top1": float(hit.float().mean())}

    def _embed(self, x):
        return self.encoder(to_unit_interval(x, self.info.num_levels))  # (B, F)
