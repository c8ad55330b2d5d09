"""Discrete flow: an invertible map of the data's own integer levels, so the likelihood is exact and the model
is a lossless code.

Images are x ∈ Z_L^D (levels 0..L−1). Each step is a modular additive coupling (Tran et al. 2019, "Discrete
flows"), with the rounded shift of integer discrete flows (Hoogeboom et al. 2019, "IDF"):

    y_a = x_a,    y_b = (x_b + round(t(x_a))) mod L,

with (a, b) a checkerboard split whose parity alternates from step to step. Each step is a bijection of Z_L^D
(its inverse subtracts the same shift, computed from y_a = x_a), and a bijection of a discrete set has no
Jacobian: P_X(x) = P_Z(f(x)).

The prior on z factors out groups of positions from coarse to fine (IDF's factor-out, here over a
"diamond-square" multiscale order): group 0 is pixel (0, 0); then, for strides s = S/2, ..., 1 (S the power of
two spanning the image), the centres of the 2s-grid's squares (positions that are odd multiples of s in both
coordinates), then the rest of the s-grid. Within a group the positions are independent given the earlier
groups:

    P(z) = Π_g Π_{d ∈ g} Σ_k π_k DL(z_d; μ_k, s_k | z_{<g}),

with DL the logistic discretised onto the L levels (the edge bins take the tails, so each factor sums to one
over 0..L−1) and the mixtures from one convolutional network that sees z on the earlier groups and two masks
(known positions, the group's positions). Hence Σ_{x ∈ Z_L^D} P_X(x) = Σ_z P_Z(z) = 1 exactly, and
−log₂ P_X(x) is achievable: the compression evaluator codes z group by group with ANS (tables of group g from
the decoded groups < g), and decodes x = f⁻¹(z) bit for bit. 8×8 images have 7 groups, 28×28 ones 11: a
sample or a decode costs that many prior passes (the ARM needs one per pixel).

Training. Rounding has zero gradient almost everywhere; as in IDF the gradient passes straight through it
(round forward, identity backward), and through mod L (derivative 1 away from the wrap); the prior is
differentiable in z because the discretised logistic's bin moves with z. The forward pass keeps z an exact
integer, so the training loss is exactly −log P(x): no estimator, no train/test gap from one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..distributions import discretized_logistic_log_pmf
from ..optim import Adam
from .base import GenerativeModel, Likelihood, register_model


@dataclass
class DiscreteFlowConfig:
    couplings: int = 4  # modular additive coupling steps (checkerboard parity alternates); 0 = the prior alone
    hidden_channels: int = 16  # width of each coupling's shift network. On digits the couplings stay the identity
    # (see coupling_lr_scale; the matrix reports what they move), so they are kept cheap: a digits epoch costs 1.22 CPU s
    # at 16 channels against 1.37 at 64 (one thread, quiet machine); 0.89 without couplings, most of the difference
    # being the straight-through gradient that the prior passes back to them
    prior_hidden: int = 32  # width of the network giving p(z_g | z_<g) (64 needs fewer epochs on digits, at ~4× the cost of each)
    prior_components: int = 4  # discretised logistics in each position's mixture
    coupling_lr_scale: float = 0.01  # the couplings' learning rate relative to the prior's: a shift that wraps
    # round mod L moves a pixel by L−1 levels, and the straight-through gradient does not see it coming; on digits
    # ×1, ×0.1 and ×0.03 each made the validation NLL jump by 10–40 nats within 15 epochs, ×0.01 trains smoothly

    def validate(self):
        if self.couplings < 0:
            raise ValueError(f"couplings must be ≥ 0, got {self.couplings}")
        if self.hidden_channels < 1 or self.prior_hidden < 1 or self.prior_components < 1:
            raise ValueError("hidden_channels, prior_hidden and prior_components must be ≥ 1")
        if self.coupling_lr_scale <= 0:
            raise ValueError(f"coupling_lr_scale must be > 0, got {self.coupling_lr_scale}")


class _RoundStraightThrough(torch.autograd.Function):
    """round(t) in the forward pass, the identity in the backward pass (IDF's straight-through rounding)."""

    @staticmethod
    def forward(ctx, t):
        return torch.round(t)

    @staticmethod
    def backward(ctx, grad):
        return grad


def checkerboard(shape: tuple[int, int, int], parity: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) float mask, 1 where (i + j + parity) is even: the half a coupling leaves unchanged."""
    _, H, W = shape
    i, j = torch.arange(H, device=device)[:, None], torch.arange(W, device=device)[None, :]
    return ((i + j + parity) % 2 == 0).to(torch.get_default_dtype())[None, None]


def multiscale_groups(H: int, W: int) -> list[torch.Tensor]:
    """(H, W) boolean masks partitioning the pixels, coarse to fine (the diamond-square order above)."""
    i, j = torch.arange(H)[:, None].expand(H, W), torch.arange(W)[None, :].expand(H, W)
    S = 1
    while S < max(H, W):
        S *= 2
    groups = [(i == 0) & (j == 0)]
    s = S // 2
    while s >= 1:
        on_grid = (i % s == 0) & (j % s == 0) & ~((i % (2 * s) == 0) & (j % (2 * s) == 0))
        centres = on_grid & (i % (2 * s) == s) & (j % (2 * s) == s)
        groups += [g for g in (centres, on_grid & ~centres) if g.any()]
        s //= 2
    return groups


def _levels_to_input(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integer-valued float levels → [-1, 1] network input (differentiable, unlike ``to_symmetric``'s cast)."""
    return 2.0 * x / (num_levels - 1) - 1.0


class ModularCoupling(nn.Module):
    """y_a = x_a, y_b = (x_b + round(t(x_a))) mod L on integer-valued float tensors; ``inverse`` undoes it."""

    def __init__(self, shape: tuple[int, int, int], num_levels: int, hidden: int, parity: int):
        super().__init__()
        C = shape[0]
        self.num_levels = num_levels
        self.register_buffer("mask", checkerboard(shape, parity))
        self.net = nn.Sequential(
            nn.Conv2d(C + 1, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, C, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # every step starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """The integer shift of the b half (0 on the a half), from x_a only."""
        m = self.mask
        h = torch.cat([_levels_to_input(x, self.num_levels) * m, m.expand(x.shape[0], 1, -1, -1)], dim=1)
        t = self.net(h)  # in level units
        return _RoundStraightThrough.apply(t) * (1 - m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.remainder(x + self.shift(x), self.num_levels)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.remainder(y - self.shift(y), self.num_levels)  # shift(y) = shift(x): y_a = x_a


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, h):
        if self.conv.dilation[0] >= h.shape[-2] and self.conv.dilation[1] >= h.shape[-1]:
            # Every off-centre tap lands in the zero padding (an 8×8 image at dilation 8): the centre tap alone is
            # the same convolution, at a ninth of its multiply-adds (the off-centre weights get zero gradient either way).
            return h + torch.relu(F.conv2d(h, self.conv.weight[:, :, 1:2, 1:2], self.conv.bias))
        return h + torch.relu(self.conv(h))


class GroupPrior(nn.Module):
    """Mixture parameters for every position from z on the known positions and the masks (known, target).

    Dilations 1, 2, 4, 8 give a 31×31 receptive field, so the coarse groups of a 28×28 image still see their
    decoded neighbours at stride 8."""

    def __init__(self, channels: int, hidden: int, components: int):
        super().__init__()
        self.components = components
        self.net = nn.Sequential(
            nn.Conv2d(channels + 2, hidden, 3, padding=1), nn.ReLU(),
            *[_Residual(hidden, d) for d in (1, 2, 4, 8)],
            nn.Conv2d(hidden, 3 * components * channels, 1),
        )

    def forward(self, z_in: torch.Tensor, known: torch.Tensor, target: torch.Tensor):
        """z_in (B, C, H, W) in [-1, 1]; known, target (B, 1, H, W). Returns (log-weights, means, log-scales),
        each (B, K, C, H, W)."""
        B, C, H, W = z_in.shape
        # torch.where, not a product: unknown positions are exactly +0.0 whatever z holds there, so the encoder
        # (z complete) and the decoder (z partly decoded) give the network bit-identical inputs.
        h = torch.cat([torch.where(known.bool(), z_in, torch.zeros_like(z_in)), known, target], dim=1)
        logits, mean, log_scale = self.net(h).view(B, 3, self.components, C, H, W).unbind(1)
        # scales within e^±7 of the [-1, 1] range: a narrower bin mass underflows, a wider one is uniform anyway
        return torch.log_softmax(logits, dim=1), mean, log_scale.clamp(-7.0, 7.0)


@register_model("idf")
class DiscreteFlow(GenerativeModel):
    family = "flow (discrete, IDF)"
    loss_name = "NLL (nats/image)"
    description = "Discrete flow: modular integer couplings (Tran et al.; IDF), multiscale factor-out prior; exact, ANS-coded"
    Config = DiscreteFlowConfig
    likelihood = Likelihood.EXACT
    estimator = "exact (bijection of the integer levels)"
    discrete_latent = True
    can_sample = True
    can_embed = False
    embed_note = "z = f(x) is a re-coding of the pixels on the same integer levels, not a representation"
    train_defaults = {"max_epochs": 40, "patience": 10, "batch_size": 64, "lr": 1e-3, "grad_clip": 1.0}

    def __init__(self, cfg: DiscreteFlowConfig, info):
        super().__init__(cfg, info)
        shape, L = info.shape, info.num_levels
        C, H, W = shape
        self.couplings = nn.ModuleList(ModularCoupling(shape, L, cfg.hidden_channels, i % 2) for i in range(cfg.couplings))
        groups = torch.stack(multiscale_groups(H, W)).to(torch.get_default_dtype())[:, None]  # (G, 1, H, W)
        self.register_buffer("group_masks", groups, persistent=False)
        # known before group g: the union of groups < g
        self.register_buffer("known_masks", torch.cumsum(groups, 0) - groups, persistent=False)
        self.prior = GroupPrior(C, cfg.prior_hidden, cfg.prior_components)

    # --- the bijection -----------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        """The float type the integer levels are carried in (the buffers', so `.double()` moves it)."""
        return self.group_masks.dtype

    def _forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x) on integer-valued floats (differentiable, straight through the rounding)."""
        z = x
        for coupling in self.couplings:
            z = coupling(z)
        return z

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x): (B, C, H, W) integer levels → integer levels of the same shape (a bijection of Z_L^D)."""
        with torch.no_grad():
            return self._forward_float(self.check_input(x).to(self._dtype)).long()

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """x = f⁻¹(z)."""
        with torch.no_grad():
            x = self.check_input(z).to(self._dtype)
            for coupling in reversed(self.couplings):
                x = coupling.inverse(x)
            return x.long()

    # --- the prior ---------------------------------------------------------------------------------------
    def _mixture_log_pmf(self, params, z: torch.Tensor) -> torch.Tensor:
        """Elementwise log P(z) under the mixtures, (B, C, H, W)."""
        log_w, mean, log_scale = params
        per = discretized_logistic_log_pmf(mean, log_scale, z.unsqueeze(1).expand_as(mean), self.info.num_levels)
        return torch.logsumexp(log_w + per, dim=1)

    def _group_params(self, z: torch.Tensor, group: int):
        B = z.shape[0]
        known = self.known_masks[group].expand(B, 1, -1, -1)
        target = self.group_masks[group].expand(B, 1, -1, -1)
        return self.prior(_levels_to_input(z.to(self._dtype), self.info.num_levels), known, target)

    def _prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) log P(z): every group's conditionals from one batched pass of the prior over G copies of z.

        Its value and its gradient in the prior's parameters are exact; its gradient in z (the straight-through
        signal to the couplings) is that of the interior-bin formula at every level, because the edge bins' mass
        does not move the way their formula's derivative in z says (it grows with a bin that cannot exist past
        the edge)."""
        B, G, L = z.shape[0], len(self.group_masks), self.info.num_levels
        zg = z.repeat(G, 1, 1, 1)  # (G·B, C, H, W), group-major
        known = self.known_masks.repeat_interleave(B, 0)  # (G·B, 1, H, W)
        target = self.group_masks.repeat_interleave(B, 0)
        params = self.prior(_levels_to_input(zg, L), known, target)
        exact = self._mixture_log_pmf(params, zg.detach())
        if z.requires_grad and L >= 3:
            z_interior = zg.detach().clamp(1, L - 2) + (zg - zg.detach())  # value moved off the edge, gradient identity
            interior = self._mixture_log_pmf([p.detach() for p in params], z_interior)
            exact = exact + interior - interior.detach()
        # (G·B,) each copy counts its own group's positions (where, not a product: −inf · 0 would be NaN)
        per_group = torch.where(target.bool(), exact, torch.zeros_like(exact)).flatten(1).sum(1)
        return per_group.view(G, B).sum(0)

    @property
    def latent_groups(self) -> list[torch.Tensor]:
        """(C, H, W) boolean masks of z in decoding order: the tables of a group depend only on earlier groups."""
        return [g.expand(*self.info.shape).bool() for g in self.group_masks[:, 0]]

    @torch.no_grad()
    def latent_log_pmf(self, z: torch.Tensor, group: int) -> torch.Tensor:
        """(B, L, C, H, W) log P(z_d = k | earlier groups) for every level k; valid at the positions of ``group``."""
        params = self._group_params(z, group)
        shape = params[1][:, 0].shape  # (B, C, H, W)
        return torch.stack([self._mixture_log_pmf(params, torch.full(shape, float(k), dtype=self._dtype, device=z.device))
                            for k in range(self.info.num_levels)], dim=1)

    @property
    def sampling_passes(self) -> int:
        """One prior pass per group (7 for 8×8, 11 for 28×28) and one inverse pass of the couplings."""
        return len(self.group_masks) + 1

    # --- the contract ------------------------------------------------------------------------------------
    def _log_prob(self, x):
        z = self._forward_float(x.to(self._dtype))  # exact integers in the forward pass
        return self._prior_log_prob(z)

    def configure_optimizers(self, train_cfg):
        groups = [{"params": self.prior.parameters(), "lr": train_cfg.lr},
                  {"params": self.couplings.parameters(), "lr": train_cfg.lr * self.cfg.coupling_lr_scale}]
        return [Adam(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)]

    def loss(self, x):
        nll = -self._log_prob(self.check_input(x)).mean()
        return nll, {"nll_nats": float(nll.detach())}

    @torch.no_grad()
    def _sample(self, num_samples):
        z = torch.zeros(num_samples, *self.info.shape, dtype=torch.long, device=self.device)
        for g, group in enumerate(self.latent_groups):
            logits = self.latent_log_pmf(z, g).movedim(1, -1)  # (B, C, H, W, L)
            draw = torch.distributions.Categorical(logits=logits).sample()
            z = torch.where(group, draw, z)
        return self.from_latent(z)
