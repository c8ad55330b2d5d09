"""Normalising flow: RealNVP affine couplings (Dinh et al., 2017) with Glow pieces (Kingma & Dhariwal, 2018),
trained and evaluated on a dequantisation bound of the *discrete* likelihood.

Change of variables (lecture "Introduction to Deep Generative Modeling"): for an invertible f with z = f(v),

    log p_V(v) = log N(f(v) | 0, I) + log |det ∂f/∂v|,

and f is a chain of transforms each returning ``(outputs, logabsdet)`` and having an ``inverse``:

* ``Logit``        v ↦ logit(α + (1-2α) v)  — maps the unit cube to R^D (RealNVP's pre-processing);
* ``ActNorm``      per-channel y = x·e^s + b, initialised from the first training batch (Glow);
* ``InvConv1x1``   y = W x per pixel with W = P L (U + diag(sign·e^{log s})) (LU, Glow), log|det| = H·W·Σ log s;
* ``AffineCoupling`` y_a = x_a,  y_b = exp(s(x_a)) ⊙ x_b + t(x_a),  log|det| = Σ s(x_a), with a checkerboard
  or a channel split of x into (a, b);
* ``Squeeze``      (C, H, W) → (4C, H/2, W/2), a permutation (log|det| = 0).

Dequantisation. The data are integer levels k ∈ {0..L-1}^D. With x = k + u, u ∈ [0,1)^D, and v = x / L ∈ [0,1)^D,
a density on v gives the discrete pmf P(k) = ∫ p_X(k + u) du with p_X(x) = p_V(x/L) · L^{-D}. For any
q(u|k) on [0,1)^D, Jensen's inequality gives the bound evaluated here (Theis et al. 2016; Ho et al. 2019):

    log P(k) ≥ E_{u~q(u|k)} [ log p_V((k+u)/L) − D log L − log q(u|k) ].

``uniform`` dequantisation takes q = U[0,1)^D (log q = 0); ``variational`` (Flow++) learns q(u|k) as a small
conditional flow: ε ~ N(0, I) → couplings conditioned on features of k → sigmoid, so u ∈ (0,1)^D and
log q(u|k) = log N(ε) − log|det ∂u/∂ε|. Either way, ``log_prob`` is a single-sample estimate of a lower bound
on the discrete log-likelihood, in nats per image on the data's own levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import log_standard_normal, to_symmetric
from .base import GenerativeModel, Likelihood, register_model


@dataclass
class FlowConfig:
    hidden_channels: int = 64  # width of the s, t networks inside each coupling
    checkerboard_steps: int = 4  # (ActNorm, checkerboard coupling) steps at the input resolution
    num_scales: int = 1  # squeezes (C, H, W) → (4C, H/2, W/2), each followed by `steps_per_scale` Glow steps
    steps_per_scale: int = 4  # (ActNorm, invertible 1×1 conv, channel coupling) steps after each squeeze
    logit_alpha: float = 0.05  # α of the logit pre-processing v ↦ logit(α + (1-2α) v)
    dequantization: Literal["uniform", "variational"] = "uniform"  # q(u|x): uniform, or a learned conditional flow
    dequant_steps: int = 4  # conditional checkerboard couplings in the variational q(u|x)
    dequant_hidden: int = 32  # width of the variational q(u|x) networks and of its context features

    def validate(self):
        if self.hidden_channels < 1 or self.dequant_hidden < 1:
            raise ValueError("hidden_channels and dequant_hidden must be ≥ 1")
        if self.checkerboard_steps < 0 or self.num_scales < 0 or self.steps_per_scale < 0 or self.dequant_steps < 1:
            raise ValueError("checkerboard_steps, num_scales, steps_per_scale must be ≥ 0 and dequant_steps ≥ 1")
        if self.checkerboard_steps + self.num_scales * self.steps_per_scale < 1:
            raise ValueError("the flow needs at least one coupling")
        if not 0.0 < self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {self.logit_alpha}")
        if self.dequantization not in ("uniform", "variational"):
            raise ValueError(f"dequantization must be 'uniform' or 'variational', got {self.dequantization!r}")


def sum_except_batch(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).sum(1)


# ------------------------------------------------------------------------------------------ transforms
class Transform(nn.Module):
    """An invertible map. ``forward(x) → (y, log|det ∂y/∂x|)`` and ``inverse(y) → (x, log|det ∂x/∂y|)``, each
    log-determinant of shape (B,). ``context`` (B, K, H, W) conditions the map (used by q(u|x))."""

    def forward(self, x, context=None):
        raise NotImplementedError

    def inverse(self, y, context=None):
        raise NotImplementedError


class CompositeTransform(Transform):
    """f = f_n ∘ … ∘ f_1; log-determinants add up."""

    def __init__(self, transforms: list[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x, context=None):
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, context)
            total = total + ld
        return x, total

    def inverse(self, y, context=None):
        total = y.new_zeros(y.shape[0])
        for t in reversed(self.transforms):
            y, ld = t.inverse(y, context)
            total = total + ld
        return y, total


class InverseTransform(Transform):
    """The inverse of a transform, as a transform (e.g. the sigmoid as the inverse of the logit)."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.base = transform

    def forward(self, x, context=None):
        return self.base.inverse(x, context)

    def inverse(self, y, context=None):
        return self.base(y, context)


class Logit(Transform):
    """v ∈ [0,1] ↦ y = logit(s), s = α + (1-2α) v;  log|dy/dv| = log(1-2α) − log s − log(1-s) per dimension."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def _log_det(self, s: torch.Tensor) -> torch.Tensor:
        return sum_except_batch(math.log1p(-2 * self.alpha) - torch.log(s) - torch.log1p(-s))

    def forward(self, x, context=None):
        s = self.alpha + (1 - 2 * self.alpha) * x
        return torch.log(s) - torch.log1p(-s), self._log_det(s)

    def inverse(self, y, context=None):
        # log|dv/dy| = log σ(y) + log σ(-y) − log(1-2α), in a form that stays finite where σ(y) rounds to 0 or 1.
        log_det = sum_except_batch(F.logsigmoid(y) + F.logsigmoid(-y) - math.log1p(-2 * self.alpha))
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha), log_det


class ActNorm(Transform):
    """y = x · exp(log_scale) + bias per channel; log|det| = H·W·Σ_c log_scale_c.

    Glow's data-dependent initialisation: on the first forward pass in training mode the parameters are set so
    that the batch's outputs have zero mean and unit variance per channel (``initialized`` is saved with them).
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True) if x.numel() // x.shape[1] > 1 else torch.ones_like(mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.bias.copy_(-mean * torch.exp(self.log_scale))
        self.initialized.fill_(True)

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        return (x.shape[2] * x.shape[3] * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x, context=None):
        if self.training and not bool(self.initialized):
            self._initialize(x)
        return x * torch.exp(self.log_scale) + self.bias, self._log_det(x)

    def inverse(self, y, context=None):
        return (y - self.bias) * torch.exp(-self.log_scale), -self._log_det(y)


class InvConv1x1(Transform):
    """Invertible 1×1 convolution y_ij = W x_ij with W = P L (U + diag(sign · e^{log_s})) (Glow's LU form):
    P a fixed permutation, L unit lower-triangular, U strictly upper-triangular, so log|det W| = Σ log_s and
    log|det ∂y/∂x| = H·W·Σ log_s. Initialised at a random rotation."""

    def __init__(self, num_channels: int):
        super().__init__()
        C = num_channels
        w = torch.linalg.qr(torch.randn(C, C))[0]  # random orthogonal matrix, |det| = 1
        P, L, U = torch.linalg.lu(w)
        s = torch.diagonal(U)
        self.register_buffer("perm", P)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(C, C), -1))
        self.lower = nn.Parameter(L * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(U, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper  # (C, C)

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        return (x.shape[2] * x.shape[3] * self.log_s.sum()).expand(x.shape[0])

    def forward(self, x, context=None):
        return torch.einsum("ij,bjhw->bihw", self.weight(), x), self._log_det(x)

    def inverse(self, y, context=None):
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.weight()), y), -self._log_det(y)


class Squeeze(Transform):
    """(B, C, H, W) → (B, 4C, H/2, W/2): each 2×2 block becomes 4 channels (RealNVP); a permutation."""

    def forward(self, x, context=None):
        B, C, H, W = x.shape
        y = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)
        return y, x.new_zeros(B)

    def inverse(self, y, context=None):
        B, C4, H2, W2 = y.shape
        x = y.view(B, C4 // 4, 2, 2, H2, W2).permute(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * H2, 2 * W2)
        return x, y.new_zeros(B)


class AffineCoupling(Transform):
    """RealNVP affine coupling: y_a = x_a, y_b = exp(s(x_a)) ⊙ x_b + t(x_a), log|det| = Σ_b s(x_a).

    ``split="checkerboard"``: a = pixels with (i + j + parity) even, all channels. ``split="channel"``: a = the
    first half of the channels (the second half if parity is odd). s = scale · tanh(·) keeps the step bounded;
    the last layer of the network starts at zero, so every coupling starts as the identity (Glow).
    """

    def __init__(self, num_channels: int, hidden: int, split: Literal["checkerboard", "channel"], parity: int,
                 context_channels: int = 0):
        super().__init__()
        self.split, self.parity, C = split, parity % 2, num_channels
        if split == "checkerboard":
            c_in, self.c_out = C + 1, C  # the mask itself is an input channel, so the net knows which half is which
        else:
            half = C // 2
            self.a_channels = C - half if self.parity == 0 else half  # x_a: channels [:a] (or the last `a`)
            c_in, self.c_out = self.a_channels, C - self.a_channels
        self.net = nn.Sequential(
            nn.Conv2d(c_in + context_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * self.c_out, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(1, self.c_out, 1, 1))

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[2:]
        i, j = torch.arange(H, device=x.device)[:, None], torch.arange(W, device=x.device)[None, :]
        return ((i + j + self.parity) % 2 == 0).to(x.dtype)[None, None]  # (1, 1, H, W), 1 on the a half

    def _split(self, x):
        if self.parity == 0:
            return x[:, : self.a_channels], x[:, self.a_channels :]
        return x[:, -self.a_channels :], x[:, : -self.a_channels]

    def _join(self, a, b):
        return torch.cat([a, b] if self.parity == 0 else [b, a], dim=1)

    def _s_t(self, a: torch.Tensor, context) -> tuple[torch.Tensor, torch.Tensor]:
        h = a if context is None else torch.cat([a, context], dim=1)
        raw_s, t = self.net(h).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def forward(self, x, context=None):
        if self.split == "checkerboard":
            m = self._mask(x)
            s, t = self._s_t(torch.cat([x * m, m.expand(x.shape[0], 1, -1, -1)], 1), context)
            s, t = s * (1 - m), t * (1 - m)  # act on the b half only; s = 0 on a, so Σ s = Σ_b s
            return x * torch.exp(s) + t, sum_except_batch(s)
        a, b = self._split(x)
        s, t = self._s_t(a, context)
        return self._join(a, b * torch.exp(s) + t), sum_except_batch(s)

    def inverse(self, y, context=None):
        if self.split == "checkerboard":
            m = self._mask(y)
            s, t = self._s_t(torch.cat([y * m, m.expand(y.shape[0], 1, -1, -1)], 1), context)  # y_a = x_a
            s, t = s * (1 - m), t * (1 - m)
            return (y - t) * torch.exp(-s), -sum_except_batch(s)
        a, b = self._split(y)
        s, t = self._s_t(a, context)
        return self._join(a, (b - t) * torch.exp(-s)), -sum_except_batch(s)


# --------------------------------------------------------------------------------------- dequantisation
class VariationalDequantizer(nn.Module):
    """q(u|k) on (0,1)^D: ε ~ N(0, I) → conditional checkerboard couplings (context = features of k) → sigmoid."""

    def __init__(self, shape: tuple[int, int, int], num_levels: int, hidden: int, steps: int):
        super().__init__()
        C = shape[0]
        self.num_levels = num_levels
        self.context_net = nn.Sequential(
            nn.Conv2d(C, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU()
        )
        couplings: list[Transform] = [AffineCoupling(C, hidden, "checkerboard", i, context_channels=hidden) for i in range(steps)]
        self.transform = CompositeTransform(couplings + [InverseTransform(Logit(0.0))])  # last: sigmoid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer images (B, C, H, W) → (u in (0,1), log q(u|x) (B,)) with one reparameterised sample."""
        dtype = self.context_net[0].weight.dtype
        context = self.context_net(to_symmetric(x, self.num_levels).to(dtype))  # (B, hidden, H, W)
        eps = torch.randn(x.shape, device=x.device, dtype=dtype)
        u, log_det = self.transform(eps, context)
        return u, sum_except_batch(log_standard_normal(eps)) - log_det


# ----------------------------------------------------------------------------------------------- model
@register_model("flow")
class Flow(GenerativeModel):
    family = "flow (RealNVP/Glow)"
    loss_name = "dequantised NLL bound (nats/image)"
    description = "Flow: RealNVP couplings + Glow actnorm/1×1 conv; uniform or variational dequantisation bound"
    Config = FlowConfig
    likelihood = Likelihood.BOUND
    estimator = "dequantised bound"  # "variational dequantised bound" when dequantization = variational
    can_sample = True
    can_embed = True
    embed_note = "latent z = f((x + 0.5) / L) at the centre of each pixel's dequantisation interval (D dims)"
    train_defaults = {"max_epochs": 60, "patience": 15, "batch_size": 64, "lr": 2e-3, "grad_clip": 50.0}

    def __init__(self, cfg: FlowConfig, info):
        super().__init__(cfg, info)
        C, H, W = info.shape
        if H % 2**cfg.num_scales or W % 2**cfg.num_scales:
            raise ValueError(f"num_scales={cfg.num_scales} squeezes need H and W divisible by {2**cfg.num_scales}, got {H}×{W}")
        steps: list[Transform] = [Logit(cfg.logit_alpha)]
        for i in range(cfg.checkerboard_steps):
            steps += [ActNorm(C), AffineCoupling(C, cfg.hidden_channels, "checkerboard", i)]
        for _ in range(cfg.num_scales):
            steps.append(Squeeze())
            C *= 4
            for j in range(cfg.steps_per_scale):
                steps += [ActNorm(C), InvConv1x1(C), AffineCoupling(C, cfg.hidden_channels, "channel", j)]
        self.transform = CompositeTransform(steps)
        self.latent_shape = (C, H // 2**cfg.num_scales, W // 2**cfg.num_scales)
        self.dequantizer = (
            VariationalDequantizer(info.shape, info.num_levels, cfg.dequant_hidden, cfg.dequant_steps)
            if cfg.dequantization == "variational" else None
        )
        if self.dequantizer is not None:
            self.estimator = "variational dequantised bound"

    def log_density(self, v: torch.Tensor) -> torch.Tensor:
        """(B,) continuous log p_V(v) for v (B, C, H, W) in [0,1): log N(f(v)) + log|det ∂f/∂v|."""
        z, log_det = self.transform(v)
        return sum_except_batch(log_standard_normal(z)) + log_det

    def dequantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u ~ q(u|x) in [0,1)^D and log q(u|x) (B,): uniform (log q = 0) or the variational flow."""
        if self.dequantizer is None:
            u = torch.rand(x.shape, device=x.device, dtype=self.dtype)
            return u, u.new_zeros(x.shape[0])
        return self.dequantizer(x)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _log_prob(self, x):
        # log P(x) ≥ log p_V((x+u)/L) − D log L − log q(u|x), u ~ q(u|x): one sample of the bound (module docstring).
        L = self.info.num_levels
        u, log_q = self.dequantize(x)
        v = (x.to(u.dtype) + u) / L  # (B, C, H, W) in [0, 1)
        return self.log_density(v) - self.info.num_dims * math.log(L) - log_q

    def loss(self, x):
        bound = self._log_prob(self.check_input(x))
        nll = -bound.mean()
        return nll, {"nll_nats": float(nll.detach())}

    @torch.no_grad()
    def _sample(self, num_samples):
        # z ~ N(0, I) → v = f⁻¹(z) → the level whose interval [k/L, (k+1)/L) holds v (clamped to 0..L-1).
        z = torch.randn(num_samples, *self.latent_shape, device=self.device, dtype=self.dtype)
        v, _ = self.transform.inverse(z)
        return torch.floor(v * self.info.num_levels).clamp(0, self.info.num_levels - 1).long()

    def _embed(self, x):
        z, _ = self.transform((x.to(self.dtype) + 0.5) / self.info.num_levels)
        return z.flatten(1)  # (B, D)
