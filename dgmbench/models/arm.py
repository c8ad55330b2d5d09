"""Autoregressive model (ARM): a gated PixelCNN (van den Oord et al., 2016) over the data's own levels.

The joint distribution is factorised in raster order, channels 0..C-1 within a pixel (lecture "Introduction to
Deep Generative Modeling"):

    p(x) = ∏_d p(x_d | x_<d),    p(x_d | x_<d) = Cat(x_d | softmax(f_θ(x_<d))_d)   over the L levels,

so log p(x) = Σ_d log p(x_d | x_<d) is exact, and one network pass gives all D conditionals at once (teacher
forcing). Sampling is sequential: D = C·H·W passes.

Causality comes from two stacks of convolutions (the "gated PixelCNN", which removes the blind spot of the
original masked 3×3 PixelCNN):

* the vertical stack v at (h, w) sees only rows strictly above h (all columns w-p..w+p, widening with depth);
* the horizontal stack h at (h, w) sees row h at columns ≤ w (mask "A" in the first layer: < w, and for C > 1
  channel c sees only channels < c of the current pixel; mask "B" afterwards: ≤ w, channel groups ≤ c) plus
  the vertical stack at (h, w) through a 1×1 link.

Each layer is gated:  y = tanh(W_f * a) ⊙ σ(W_g * a),  with a residual connection on the horizontal stack.
Hidden channels are split into C contiguous groups; group c is the part that may know channels < c of the
current pixel (PixelRNN's channel masking), and the output logits for channel c read groups ≤ c.

Fast sampling (Ramachandran et al., 2017, "Fast generation for convolutional autoregressive models"): the
activations of finished positions never change, so :meth:`ARM.sample` keeps every layer's activations in
buffers and computes, per row, one row of the vertical stack and, per position, one position of the horizontal
stack — instead of the whole network per position as :meth:`ARM.sample_naive` does. Both draw one uniform per
position up front and pick the level by inverting the CDF, so with the same weights and seed they return the
same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import categorical_log_prob, to_symmetric
from .base import GenerativeModel, Likelihood, register_model


@dataclass
class ARMConfig:
    hidden_channels: int = 32  # F, features per stack (split into C groups for channel masking)
    num_layers: int = 5  # gated layers (each has a vertical and a horizontal convolution)
    first_kernel: int = 5  # odd width k0 of the first layer (sees k0//2 rows up and k0//2 columns left)
    kernel: int = 3  # odd width k of later layers (each adds k//2 rows/columns of receptive field)
    head_channels: int = 64  # width of the 1×1 output head before the logits
    dropout: float = 0.1  # dropout on the gated horizontal features (regularises small datasets)

    def validate(self):
        if self.hidden_channels < 1 or self.num_layers < 1 or self.head_channels < 1:
            raise ValueError("hidden_channels, num_layers and head_channels must be ≥ 1")
        for name in ("first_kernel", "kernel"):
            k = getattr(self, name)
            if k < 3 or k % 2 == 0:
                raise ValueError(f"{name} must be odd and ≥ 3, got {k}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# ------------------------------------------------------------------------------------------- masking
def channel_groups(num: int, num_groups: int) -> torch.Tensor:
    """Group (image channel) that each of ``num`` feature channels belongs to: C contiguous blocks."""
    return torch.arange(num) * num_groups // num


def group_mask(groups_out: torch.Tensor, groups_in: torch.Tensor, strict: bool) -> torch.Tensor:
    """(out, in) 0/1 connectivity at the current pixel: group c may read groups < c (mask A) or ≤ c (mask B)."""
    allowed = groups_in[None, :] < groups_out[:, None] if strict else groups_in[None, :] <= groups_out[:, None]
    return allowed.float()


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask; inputs arrive already padded."""

    def __init__(self, c_in: int, c_out: int, kernel_size: tuple[int, int], mask: torch.Tensor):
        super().__init__(c_in, c_out, kernel_size, padding=0)
        self.register_buffer("mask", mask.expand_as(self.weight).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def gate(a: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a_f) ⊙ σ(a_g) on the two channel halves of a (B, 2F, ...) tensor."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One vertical + horizontal gated layer. ``first`` selects mask A (strict) and the strictly-above vertical
    kernel; later layers use mask B and a vertical kernel that includes the current row of the stack below."""

    def __init__(self, c_in: int, hidden: int, kernel: int, num_channels: int, first: bool, dropout: float = 0.0):
        super().__init__()
        self.first, self.pad = first, kernel // 2
        self.dropout = nn.Dropout(dropout)
        p, C = self.pad, num_channels
        g_in = torch.arange(C) if first else channel_groups(hidden, C)  # groups of the input channels
        g_hid = channel_groups(hidden, C)
        g_gate = torch.cat([g_hid, g_hid])  # the tanh half and the sigmoid half share the groups
        # Vertical: rows h-p..h-1 (first layer, of the image) or h-p..h (later, of v which already lags a row).
        self.v_rows = p if first else p + 1
        self.v_conv = nn.Conv2d(c_in, 2 * hidden, (self.v_rows, kernel))
        # Horizontal: columns w-p..w of the same row; only the current column w is channel-masked.
        h_mask = torch.ones(2 * hidden, c_in, 1, p + 1)
        h_mask[:, :, 0, p] = group_mask(g_gate, g_in, strict=first)
        self.h_conv = MaskedConv2d(c_in, 2 * hidden, (1, p + 1), h_mask)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # v → h; v holds only rows above, so no mask
        self.h_out = MaskedConv2d(hidden, hidden, (1, 1), group_mask(g_hid, g_hid, strict=False)[..., None, None])

    # The three pieces are separate so the cached sampler can run them on one row / one position.
    def vertical(self, v_padded: torch.Tensor) -> torch.Tensor:
        """Pre-activations (B, 2F, rows, W) of the vertical stack from an input padded by ``pad_vertical``."""
        return self.v_conv(v_padded)

    def pad_vertical(self, v: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return F.pad(v, (p, p, p, 0))  # (B, c, H+p, W+2p): left, right, top

    def horizontal(self, h_padded: torch.Tensor, v_pre: torch.Tensor, h_in: torch.Tensor | None) -> torch.Tensor:
        """New horizontal features (B, F, ·, ·) from the left-padded h input, v pre-activations and residual."""
        a = self.h_conv(h_padded) + self.link(v_pre)  # (B, 2F, ·, ·)
        out = self.h_out(self.dropout(gate(a)))
        return out if h_in is None else h_in + out

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, h) → (v', h'), full images (B, ·, H, W)."""
        H = v.shape[2]
        v_pre = self.vertical(self.pad_vertical(v))[:, :, :H]  # first layer: H+1 rows, drop the last
        h_new = self.horizontal(F.pad(h, (self.pad, 0)), v_pre, None if self.first else h)
        return gate(v_pre), h_new


@register_model("arm")
class ARM(GenerativeModel):
    family = "autoregressive (ARM)"
    loss_name = "NLL (nats/image)"
    description = "ARM: gated PixelCNN (vertical/horizontal stacks, no blind spot), categorical over the levels"
    Config = ARMConfig
    likelihood = Likelihood.EXACT
    estimator = "exact"
    autoregressive = True
    can_sample = True
    can_embed = True
    embed_note = "last horizontal-stack features, averaged over all positions (F dims)"
    train_defaults = {"max_epochs": 30, "patience": 8, "batch_size": 32, "lr": 2e-3}

    def __init__(self, cfg: ARMConfig, info):
        super().__init__(cfg, info)
        C, L, Fh = info.shape[0], info.num_levels, cfg.hidden_channels
        if Fh < C:
            raise ValueError(f"hidden_channels ({Fh}) must be ≥ the number of image channels ({C})")
        self.layers = nn.ModuleList(
            GatedLayer(C if i == 0 else Fh, Fh, cfg.first_kernel if i == 0 else cfg.kernel, C, i == 0, cfg.dropout)
            for i in range(cfg.num_layers)
        )
        g_hid, g_head = channel_groups(Fh, C), channel_groups(cfg.head_channels, C)
        g_out = torch.arange(C * L) // L  # logits of channel c are the c-th block of L
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(Fh, cfg.head_channels, (1, 1), group_mask(g_head, g_hid, strict=False)[..., None, None]),
            nn.ReLU(),
            MaskedConv2d(cfg.head_channels, C * L, (1, 1), group_mask(g_out, g_head, strict=False)[..., None, None]),
        )

    # --- the network ---------------------------------------------------------------------------------
    def features(self, xf: torch.Tensor) -> torch.Tensor:
        """Last horizontal-stack features (B, F, H, W) from float inputs (B, C, H, W) in [-1, 1]."""
        v = h = xf
        for layer in self.layers:
            v, h = layer(v, h)
        return h

    def logits_from_float(self, xf: torch.Tensor) -> torch.Tensor:
        """(B, L, C, H, W) logits from float inputs in [-1, 1]; differentiable in ``xf`` (causality tests)."""
        B, C, H, W = xf.shape
        out = self.head(self.features(xf))  # (B, C·L, H, W)
        return out.view(B, C, self.info.num_levels, H, W).transpose(1, 2)

    def _float_input(self, x: torch.Tensor) -> torch.Tensor:
        return to_symmetric(x, self.info.num_levels).to(self.head[-1].weight.dtype)  # (B, C, H, W) in [-1, 1]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_float(self._float_input(x))

    def conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C, H, W) logits of p(x_d | x_<d): raster order over (h, w), channels 0..C-1 within a pixel."""
        return self._logits(self.check_input(x))

    # --- likelihood ----------------------------------------------------------------------------------
    def _log_prob(self, x):
        # log p(x) = Σ_d log Cat(x_d | softmax(logits_d)): exact, one pass (teacher forcing).
        return categorical_log_prob(self._logits(x), x)

    def loss(self, x):
        x = self.check_input(x)
        nll = -self._log_prob(x).mean()
        return nll, {"nll_nats": float(nll.detach())}

    # --- sampling ------------------------------------------------------------------------------------
    @property
    def sampling_passes(self) -> int:
        """One network evaluation per position: D = C·H·W (the cached sampler evaluates only slices of it)."""
        return self.info.num_dims

    def _draw(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Level whose CDF interval contains u: logits (N, L), u (N,) → (N,) int64 (inverse-CDF sampling)."""
        cdf = logits.softmax(-1).cumsum(-1)
        return (u[:, None] > cdf).sum(-1).clamp(max=self.info.num_levels - 1)

    def _uniforms(self, num_samples: int) -> torch.Tensor:
        return torch.rand(num_samples, *self.info.shape, device=self.device)  # (N, C, H, W), one per position

    @torch.no_grad()
    def sample_naive(self, num_samples: int) -> torch.Tensor:
        """(N, C, H, W) samples recomputing the whole network for each of the D positions (the reference path).

        Same weights and same torch seed as :meth:`sample` give the same images.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
        C, H, W = self.info.shape
        u = self._uniforms(num_samples)
        x = torch.zeros(num_samples, C, H, W, dtype=torch.long, device=self.device)
        for r in range(H):
            for w in range(W):
                for c in range(C):
                    logits = self._logits(x)[:, :, c, r, w]  # (N, L)
                    x[:, c, r, w] = self._draw(logits, u[:, c, r, w])
        return x

    @torch.no_grad()
    def _sample(self, num_samples):
        """The cached sampler (what ``sample(n)`` uses); see the module docstring."""
        C, H, W = self.info.shape
        N, dtype = num_samples, next(self.parameters()).dtype
        u = self._uniforms(N)
        x = torch.zeros(N, C, H, W, dtype=torch.long, device=self.device)
        # Input buffers of every layer, zero-padded like the full pass:
        #   vbuf[i] (N, c_in, H+p, W+2p): image (i, j) at (i+p, j+p);   hbuf[i] (N, c_in, H, W+p): at (i, j+p).
        vbuf, hbuf = [], []
        for layer in self.layers:
            c_in, p = layer.v_conv.in_channels, layer.pad
            vbuf.append(torch.zeros(N, c_in, H + p, W + 2 * p, dtype=dtype, device=self.device))
            hbuf.append(torch.zeros(N, c_in, H, W + p, dtype=dtype, device=self.device))
        last = torch.zeros(N, self.cfg.hidden_channels, 1, 1, dtype=dtype, device=self.device)
        for r in range(H):
            # Vertical stack, row r of every layer: it depends on image rows < r only, all final now.
            links = []
            for i, layer in enumerate(self.layers):
                v_pre = layer.vertical(vbuf[i][:, :, r : r + layer.v_rows])  # (N, 2F, 1, W)
                links.append(v_pre)
                if i + 1 < len(self.layers):
                    q = self.layers[i + 1].pad
                    vbuf[i + 1][:, :, r + q, q : q + W] = gate(v_pre[:, :, 0])
            for w in range(W):
                for c in range(C):
                    # Horizontal stack at the single position (r, w), from cached columns w-p..w of each layer.
                    for i, layer in enumerate(self.layers):
                        p = layer.pad
                        h_in = None if layer.first else hbuf[i][:, :, r : r + 1, w + p : w + p + 1]
                        out = layer.horizontal(hbuf[i][:, :, r : r + 1, w : w + p + 1], links[i][:, :, :, w : w + 1], h_in)
                        if i + 1 < len(self.layers):
                            q = self.layers[i + 1].pad
                            hbuf[i + 1][:, :, r, w + q] = out[:, :, 0, 0]
                        else:
                            last = out  # (N, F, 1, 1)
                    logits = self.head(last).view(N, C, self.info.num_levels)[:, c]  # (N, L)
                    level = self._draw(logits, u[:, c, r, w])
                    x[:, c, r, w] = level
                    value = to_symmetric(level, self.info.num_levels).to(dtype)
                    p0 = self.layers[0].pad
                    vbuf[0][:, c, r + p0, w + p0] = value
                    hbuf[0][:, c, r, w + p0] = value
        return x

    # --- representation ------------------------------------------------------------------------------
    def _embed(self, x):
        # Mean over positions of the last horizontal-stack features (the input of the output head).
        return self.features(self._float_input(x)).mean(dim=(2, 3))  # (B, F)
