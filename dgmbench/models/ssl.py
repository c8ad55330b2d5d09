"""The network the self-supervised encoders share (``dae``, ``simclr``, ``masked``): a small conv encoder.

Sharing one backbone keeps the linear-probe comparison about the *objective*, not the architecture: the three
encoders differ only in what they are trained to do (denoise, contrast two views, fill in hidden patches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneConfig:
    """Fields every conv-backbone encoder's Config inherits."""

    channels: int = 32  # width of the first conv layer; the next two have twice as many
    feature_dim: int = 128  # F, size of the representation embed() returns


class ConvEncoder(nn.Module):
    """x (B, C_in, H, W) floats → features (B, F).

    conv3×3 → conv3×3 stride 2 → conv3×3 stride 2 → linear: 8×8 → 4×4 → 2×2 on digits, 28 → 14 → 7 on MNIST.
    No batch norm, so features do not depend on the batch they are computed in.
    """

    def __init__(self, in_channels: int, height: int, width: int, channels: int, feature_dim: int):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.LeakyReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.LeakyReLU(),
        )
        h, w = height, width
        for _ in range(2):  # two stride-2 convs with padding 1: n ↦ ⌈n / 2⌉
            h, w = (h + 1) // 2, (w + 1) // 2
        self.fc = nn.Linear(2 * c * h * w, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))  # (B, F)


def mlp_head(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """One hidden layer: the projection head of SimCLR and the decoders of the reconstruction objectives."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.LeakyReLU(), nn.Linear(d_hidden, d_out))
