"""MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray & Larochelle, ICML 2015).

An autoregressive model, like NADE and PixelCNN, over the D = C·H·W values of an image in dgmbench's order
(raster over (h, w), channels 0..C-1 within a pixel):

    p(x) = ∏_d p(x_d | x_<d),    p(x_d | x_<d) = Cat(x_d | softmax(f_θ(x)_d))   over the L levels.

MADE makes one fully connected auto-encoder autoregressive by masking its weights. Every unit gets a *degree*:

* input d has degree m(d) = d               (d = 1..D, its position in the order);
* hidden unit k of layer l has a degree m_l(k) ∈ {1, ..., D-1};
* a hidden unit may read a unit of the layer below iff   m_l(k) ≥ m_{l-1}(j)        (Germain et al., eq. 12);
* output d may read hidden unit k of the last layer iff  d > m_L(k)    (strict: eq. 13).

By induction a hidden unit of degree m depends only on inputs 1..m, so output d depends only on x_<d: every
conditional comes out of ONE pass (training and likelihood are one pass, like teacher forcing in an ARM), while
sampling takes D passes, one per position. Germain et al. draw the hidden degrees at random; here they cycle
through 1..D-1 (so every degree is present whatever the width and the model needs no seed of its own).
Output d has L logits, so each output degree is shared by L units. With D = 1 no hidden unit may feed the output
and p(x_1) is the softmax of the output bias alone, which is still a normalised distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgmbench.distributions import categorical_log_prob, to_symmetric
from dgmbench.models.base import GenerativeModel, Likelihood, register_model


@dataclass
class MADEConfig:
    hidden_units: int = 512  # width of each hidden layer
    num_hidden_layers: int = 2  # masked hidden layers between input and output

    def validate(self):
        if self.hidden_units < 1 or self.num_hidden_layers < 1:
            raise ValueError("hidden_units and num_hidden_layers must be ≥ 1")


class MaskedLinear(nn.Linear):
    """y = (W ⊙ M) x + b with a fixed 0/1 connectivity mask M of shape (out, in)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(num_dims: int, hidden_units: int, num_hidden_layers: int) -> list[torch.Tensor]:
    """Degrees of the input units (1..D) and of each hidden layer's units (cycling through 1..max(D-1, 1))."""
    hidden = torch.arange(hidden_units) % max(num_dims - 1, 1) + 1
    return [torch.arange(1, num_dims + 1)] + [hidden] * num_hidden_layers


@register_model("made")
class MADE(GenerativeModel):
    family = "autoregressive (MADE)"
    description = "MADE: masked MLP auto-encoder, every conditional in one pass, categorical over the levels (plugin)"
    Config = MADEConfig
    likelihood = Likelihood.EXACT
    estimator = "exact"
    autoregressive = True  # conditional_logits gives every p(x_d | x_<d): lossless ANS coding
    can_sample = True
    can_embed = False
    embed_note = "a MADE's hidden units each see a different prefix of the image; no single representation"
    train_defaults = {"max_epochs": 30, "patience": 8, "batch_size": 64, "lr": 1e-3}

    def __init__(self, cfg: MADEConfig, info):
        super().__init__(cfg, info)
        D, L = info.num_dims, info.num_levels
        degrees = made_degrees(D, cfg.hidden_units, cfg.num_hidden_layers)
        layers: list[nn.Module] = []
        for below, above in zip(degrees[:-1], degrees[1:]):
            layers += [MaskedLinear(above[:, None] >= below[None, :]), nn.ReLU()]  # m_l(k) ≥ m_{l-1}(j)
        out_degree = torch.arange(1, D + 1).repeat_interleave(L)  # (D·L,): the L logits of output d share d
        layers.append(MaskedLinear(out_degree[:, None] > degrees[-1][None, :]))  # d > m_L(k): strictly earlier
        self.net = nn.Sequential(*layers)

    # --- the network: (B, C, H, W) levels → (B, L, C, H, W) logits -----------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        B, (C, H, W), L = x.shape[0], self.info.shape, self.info.num_levels
        dtype = self.net[0].weight.dtype
        flat = to_symmetric(x, L).to(dtype).permute(0, 2, 3, 1).reshape(B, -1)  # (B, D) in the order (h, w, c)
        out = self.net(flat).view(B, H, W, C, L)  # output d = (h·W + w)·C + c, its L logits
        return out.permute(0, 4, 3, 1, 2)  # (B, L, C, H, W)

    def conditional_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C, H, W) logits of p(x_d | x_<d), all D of them from one masked pass."""
        return self._logits(self.check_input(x))

    def _log_prob(self, x):
        # log p(x) = Σ_d log softmax(f_θ(x)_d)[x_d]: exact, because the masks make output d a function of x_<d.
        return categorical_log_prob(self._logits(x), x)

    def loss(self, x):
        nll = -self._log_prob(self.check_input(x)).mean()  # nats per image, the exact NLL
        return nll, {"nll_nats": float(nll.detach())}

    # --- sampling: D passes, position d drawn from the pass that sees x_<d ---------------------------------
    @property
    def sampling_passes(self) -> int:
        return self.info.num_dims

    @torch.no_grad()
    def _sample(self, num_samples):
        C, H, W = self.info.shape
        u = torch.rand(num_samples, C, H, W, device=self.device)  # one uniform per position, drawn up front
        x = torch.zeros(num_samples, C, H, W, dtype=torch.long, device=self.device)
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    cdf = self._logits(x)[:, :, c, h, w].softmax(-1).cumsum(-1)  # (N, L)
                    x[:, c, h, w] = (u[:, c, h, w, None] > cdf).sum(-1).clamp(max=self.info.num_levels - 1)
        return x

    def sample_naive(self, num_samples: int) -> torch.Tensor:
        """MADE has no cache to skip: the reference sampler is the sampler (same weights and seed, same images)."""
        return self.sample(num_samples)
