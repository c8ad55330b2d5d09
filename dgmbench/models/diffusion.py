"""Denoising diffusion probabilistic model (DDPM; Sohl-Dickstein et al. 2015, Ho et al. 2020) on discrete levels.

Forward (noising) process on y₀ = to_symmetric(x) ∈ [-1, 1]^D, for t = 1..T:

    q(y_t | y_{t−1}) = N(√α_t y_{t−1}, β_t I),   α_t = 1 − β_t,   ᾱ_t = ∏_{s≤t} α_s
    q(y_t | y₀)      = N(√ᾱ_t y₀, (1 − ᾱ_t) I)          → y_t = √ᾱ_t y₀ + √(1 − ᾱ_t) ε,  ε ~ N(0, I)

Reverse (generative) process: p(y_T) = N(0, I); p_θ(y_{t−1} | y_t) = N(μ_θ(y_t, t), σ_t² I) for t ≥ 2, where a
U-Net predicts the noise ε_θ(y_t, t), the implied ŷ₀ = (y_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t is clipped to [-1, 1]
(the data's range), and μ_θ is the forward posterior mean at ŷ₀ (Ho et al. eq. 7):

    μ̃_t(y₀, y_t) = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · y₀ + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · y_t,
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t,   σ_t² = β̃_t (the posterior variance).

The last step is a **discrete decoder** over the L levels (Ho et al. §3.3): p_θ(x | y₁) = ∏_d ∫_{bin(x_d)}
N(u; μ_θ(y₁, 1)_d, β₁) du, the Gaussian's mass in the bin of width 2/(L−1) around the level's centre (the
outer bins extend to ±∞, so the L masses sum to one). Then the variational bound is a bound on the same discrete
likelihood as every other family's (DESIGN.md):

    −log p(x) ≤ L_T + Σ_{t=2}^T L_{t−1} + L₀,
        L_T     = KL(q(y_T | y₀) ‖ N(0, I))                              (closed form)
        L_{t−1} = E_q KL(q(y_{t−1} | y_t, y₀) ‖ p_θ(y_{t−1} | y_t))      = E_q ‖μ̃_t(y₀, y_t) − μ_θ(y_t, t)‖² / (2σ_t²)
        L₀      = −E_q log p_θ(x | y₁)

``log_prob`` sums every t = 1..T exactly, with one draw of y_t ~ q(y_t | y₀) per t: an unbiased estimate of
the bound whose every term is ≥ 0, so it never claims log p > 0. Training minimises the simplified objective
L_simple = E_{t, ε} ‖ε − ε_θ(y_t, t)‖² (Ho et al. eq. 14); the validation score is an unbiased one-t estimate
of the bound, with fixed random numbers so that epochs are compared on the same draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import from_symmetric, to_symmetric
from .base import GenerativeModel, Likelihood, register_model


@dataclass
class DiffusionConfig:
    num_steps: int = 100  # T, diffusion steps (Ho et al. use 1000; the exact bound costs T passes per image)
    schedule: Literal["cosine", "linear"] = "cosine"  # β_t schedule: Nichol & Dhariwal 2021, or Ho et al.'s
    channels: int = 16  # U-Net width at full resolution (doubled at each downsampling)
    num_levels_unet: int = 1  # U-Net downsamplings (fewer where the image size does not allow them)
    embed_fraction: float = 0.1  # embed(x) reads the bottleneck at t = ⌈fraction · T⌉, with noise-free y_t
    val_seed: int = 0  # seed of the fixed random numbers of the validation bound estimate

    def validate(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be ≥ 2, got {self.num_steps}")
        if self.channels < 1 or self.num_levels_unet < 0:
            raise ValueError("channels must be ≥ 1 and num_levels_unet ≥ 0")
        if not 0 < self.embed_fraction <= 1:
            raise ValueError(f"embed_fraction must be in (0, 1], got {self.embed_fraction}")


def beta_schedule(kind: str, T: int) -> torch.Tensor:
    """(T,) float64 β_1..β_T."""
    if kind == "linear":
        # Ho et al.: 1e-4 → 0.02 over T = 1000; scaled by 1000/T so ᾱ_T stays ≈ 0 for other T (Nichol & Dhariwal).
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)
    # cosine: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008; β_t = 1 − ᾱ_t/ᾱ_{t−1} ≤ 0.999
    s = 0.008
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


def discretized_gaussian_log_prob(mean: torch.Tensor, std: float, x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """log P(x) for N(mean, std²) discretised into the L bins of ``to_symmetric`` (outer bins open), (B,) nats.

    Bin k covers [c_k − h, c_k + h], c_k = 2k/(L−1) − 1, h = 1/(L−1). Mass Φ(u) − Φ(l) is computed on the side of
    the mean where it does not cancel catastrophically: as Φ(−l) − Φ(−u) when the bin lies above the mean.
    """
    mean, centre = mean.double(), to_symmetric(x, num_levels).double()
    h = 1.0 / (num_levels - 1)
    xl = x.long()
    upper = torch.where(xl == num_levels - 1, torch.full_like(centre, math.inf), (centre + h - mean) / std)
    lower = torch.where(xl == 0, torch.full_like(centre, -math.inf), (centre - h - mean) / std)
    above = (upper + lower) > 0  # bin mostly above the mean: use the upper tail
    a = torch.where(above, -lower, upper)  # the larger of the two reflected arguments
    b = torch.where(above, -upper, lower)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    log_p = log_a + torch.log(-torch.expm1((log_b - log_a).clamp(max=-1e-300)))  # log(Φ(a) − Φ(b))
    return log_p.flatten(1).sum(1)


# --------------------------------------------------------------------------------------------- network
def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv ×2 with the time embedding added as a per-channel bias in between, and a skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))  # (B, c_out, H, W)
        out = out + self.time(temb)[:, :, None, None]
        out = self.conv2(F.silu(self.norm2(out)))
        return out + self.skip(h)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer steps → (B, dim) sinusoids of geometric frequencies (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class UNet(nn.Module):
    """ε_θ(y_t, t): a small U-Net (Ronneberger et al. 2015) with a time embedding in every block.

    One ResBlock per resolution on the way down and up, skip connections by concatenation, a ResBlock at the
    bottleneck (``bottleneck`` also returns it, for ``embed``). Downsamplings: as many of ``levels`` as the
    image size allows (8×8 → 4×4; 28×28 → 14×14 → 7×7; none for odd sizes).
    """

    def __init__(self, in_ch: int, channels: int, levels: int, height: int, width: int):
        super().__init__()
        n = 0
        while n < levels and height % 2 ** (n + 1) == 0 and width % 2 ** (n + 1) == 0:
            n += 1
        self.t_dim = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.SiLU(), nn.Linear(2 * channels, 2 * channels))
        t_dim = 2 * channels
        self.conv_in = nn.Conv2d(in_ch, channels, 3, padding=1)
        widths = [channels * 2**i for i in range(n + 1)]  # e.g. [32, 64]
        self.down = nn.ModuleList(ResBlock(w, w, t_dim) for w in widths[:-1])
        self.downsample = nn.ModuleList(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1) for w in widths[:-1])
        self.mid = ResBlock(widths[-1], widths[-1], t_dim)
        self.upsample = nn.ModuleList(nn.Conv2d(2 * w, w, 3, padding=1) for w in reversed(widths[:-1]))
        self.up = nn.ModuleList(ResBlock(2 * w, w, t_dim) for w in reversed(widths[:-1]))
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start from ε_θ = 0: the identity denoiser
        nn.init.zeros_(self.conv_out.bias)

    def bottleneck_and_output(self, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temb = self.time_mlp(timestep_embedding(t, self.t_dim))  # (B, 2·channels)
        h = self.conv_in(y)  # (B, channels, H, W)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, temb)
            skips.append(h)
            h = down(h)  # (B, 2w, H/2, W/2)
        mid = h = self.mid(h, temb)
        for block, up in zip(self.up, self.upsample):
            skip = skips.pop()
            h = up(F.interpolate(h, size=skip.shape[-2:], mode="nearest"))  # (B, w, 2H', 2W')
            h = block(torch.cat([h, skip], dim=1), temb)
        return mid, self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.bottleneck_and_output(y, t)[1]  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------- model
@register_model("diffusion")
class Diffusion(GenerativeModel):
    family = "diffusion (DDPM)"
    description = "DDPM: ε-prediction U-Net, cosine schedule, discrete decoder; exact-over-t VLB; DDIM-strided sampler"
    Config = DiffusionConfig
    likelihood = Likelihood.BOUND
    estimator = "VLB"
    can_sample = True
    can_embed = True
    embed_note = "U-Net bottleneck (flattened) at a small t, with the noise-free y_t = √ᾱ_t y₀"
    # ~0.4 s CPU per epoch on digits (1000 images, batch 64): 150 epochs ≈ 65 s single-threaded.
    train_defaults = {"max_epochs": 150, "patience": 30, "batch_size": 64, "lr": 2e-3}

    def __init__(self, cfg: DiffusionConfig, info):
        super().__init__(cfg, info)
        c, h, w = info.shape
        self.net = UNet(c, cfg.channels, cfg.num_levels_unet, h, w)
        T = cfg.num_steps
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), beta_schedule(cfg.schedule, T)])  # index t = 0..T
        abar = torch.cumprod(1 - betas, 0)  # ᾱ_0 = 1
        abar_prev = torch.cat([abar[:1], abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar).clamp_min(1e-20)  # β̃_t (0 at t = 0)
        # Derived from the config, so not saved in state_dicts (persistent=False).
        for name, value in {
            "betas": betas, "abar": abar, "abar_prev": abar_prev, "post_var": post_var,
            "coef_y0": abar_prev.sqrt() * betas / (1 - abar).clamp_min(1e-20),  # μ̃_t's weight on y₀
            "coef_yt": (1 - betas).sqrt() * (1 - abar_prev) / (1 - abar).clamp_min(1e-20),  # μ̃_t's weight on y_t
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def sampling_passes(self) -> int:
        return self.cfg.num_steps

    # --- the pieces of the model -------------------------------------------------------------------------
    def _gather(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[t][:, None, None, None]  # (B, 1, 1, 1)

    def q_sample(self, y0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """y_t = √ᾱ_t y₀ + √(1 − ᾱ_t) ε."""
        abar = self._gather("abar", t)
        return abar.sqrt() * y0 + (1 - abar).sqrt() * eps

    def predict_y0(self, y_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clipped ŷ₀, ε_θ) from one network pass."""
        eps = self.net(y_t, t)
        abar = self._gather("abar", t)
        y0 = ((y_t - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1.0, 1.0)
        return y0, eps

    def posterior_mean(self, y0: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ̃_t(y₀, y_t), the mean of q(y_{t−1} | y_t, y₀)."""
        return self._gather("coef_y0", t) * y0 + self._gather("coef_yt", t) * y_t

    # --- training ----------------------------------------------------------------------------------------
    def loss(self, x):
        y0 = to_symmetric(self.check_input(x), self.info.num_levels)  # (B, C, H, W)
        t = torch.randint(1, self.cfg.num_steps + 1, (y0.shape[0],), device=y0.device)
        eps = torch.randn_like(y0)
        mse = F.mse_loss(self.net(self.q_sample(y0, t, eps), t), eps)  # L_simple, per pixel
        return mse, {}

    # --- the variational bound ---------------------------------------------------------------------------
    def prior_term(self, y0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(N(√ᾱ_T y₀, 1 − ᾱ_T) ‖ N(0, 1)) summed over dimensions, (B,) nats."""
        abar = self.abar[-1].double()
        var = 1 - abar
        return 0.5 * (abar * y0.double() ** 2 + var - 1 - torch.log(var)).flatten(1).sum(1)

    def step_terms(self, x: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """(B,) nats: L_{t−1} for t ≥ 2 and L₀ for t = 1, each at one draw y_t ~ q(y_t | y₀) (t is (B,))."""
        eps = torch.randn(y0.shape, generator=generator, device=y0.device)
        y_t = self.q_sample(y0, t, eps)
        y0_hat, _ = self.predict_y0(y_t, t)
        mean = self.posterior_mean(y0_hat, y_t, t)
        # KL between Gaussians of equal variance σ_t² = β̃_t: ‖μ̃ − μ_θ‖² / (2σ_t²) = coef_y0² ‖y₀ − ŷ₀‖² / (2β̃_t)
        true_mean = self.posterior_mean(y0, y_t, t)
        var = self._gather("post_var", t).double().clamp_min(1e-30)
        kl = ((true_mean.double() - mean.double()) ** 2 / (2 * var)).flatten(1).sum(1)
        # L₀ at t = 1: μ_θ(y₁, 1) = ŷ₀ (coef_y0 = 1, coef_yt = 0 there), decoder std √β₁.
        is_first = t == 1
        if is_first.any():
            dec = -discretized_gaussian_log_prob(mean[is_first], float(self.betas[1].sqrt()), x[is_first],
                                                 self.info.num_levels)
            kl = kl.masked_scatter(is_first, dec)
        return kl

    def _log_prob(self, x, chunk_images: int = 2048):
        """−(L_T + Σ_{t=2}^T L_{t−1} + L₀), every t summed, one y_t draw per t: (B,) nats."""
        y0 = to_symmetric(x, self.info.num_levels)
        B, T = y0.shape[0], self.cfg.num_steps
        total = self.prior_term(y0)
        per_chunk = max(1, chunk_images // B)  # steps evaluated together in one batch of B · per_chunk
        for start in range(1, T + 1, per_chunk):
            ts = torch.arange(start, min(start + per_chunk, T + 1), device=y0.device)  # (n,)
            t = ts.repeat_interleave(B)  # (n·B,)
            n = len(ts)
            terms = self.step_terms(x.repeat(n, 1, 1, 1), y0.repeat(n, 1, 1, 1), t)
            total = total + terms.view(n, B).sum(0)
        return -total

    @torch.no_grad()
    def validation_score(self, x):
        """(B,) unbiased estimate of the negative bound: L_T + L₀ + (T − 1) · L_{t−1} at one t ~ U{2..T}.

        Random numbers come from a generator seeded with ``val_seed``, so every epoch scores the same draws.
        """
        x = self.check_input(x)
        g = torch.Generator(device=x.device).manual_seed(self.cfg.val_seed)
        y0 = to_symmetric(x, self.info.num_levels)
        B, T = y0.shape[0], self.cfg.num_steps
        t = torch.randint(2, T + 1, (B,), generator=g, device=x.device)
        mid = self.step_terms(x, y0, t, generator=g)
        first = self.step_terms(x, y0, torch.ones_like(t), generator=g)
        return self.prior_term(y0) + first + (T - 1) * mid

    # --- sampling ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _sample(self, num_samples):
        """Ancestral sampling through all T steps, ending with a draw from the discrete decoder."""
        y = torch.randn(num_samples, *self.info.shape, device=self.device)
        for step in range(self.cfg.num_steps, 1, -1):
            t = torch.full((num_samples,), step, device=self.device, dtype=torch.long)
            y0_hat, _ = self.predict_y0(y, t)
            y = self.posterior_mean(y0_hat, y, t) + self._gather("post_var", t).sqrt() * torch.randn_like(y)
        y0_hat, _ = self.predict_y0(y, torch.ones(num_samples, device=self.device, dtype=torch.long))
        # Discretised Gaussian N(ŷ₀, β₁) over the bins: a continuous draw rounded to its bin's level.
        return from_symmetric(y0_hat + self.betas[1].sqrt() * torch.randn_like(y0_hat), self.info.num_levels)

    @torch.no_grad()
    def sample_strided(self, num_samples: int, steps: int, eta: float = 0.0) -> torch.Tensor:
        """(num_samples, C, H, W) int64 levels from a DDIM sampler (Song et al. 2021) on ``steps`` of the T steps.

        Visits τ_1 > ... > τ_S evenly spaced in T..1; from τ_i to τ_{i+1} (τ_{S+1} = 0, ᾱ_0 = 1):
            ŷ₀ = clip((y − √(1 − ᾱ_τ) ε_θ) / √ᾱ_τ),  ε̂ = (y − √ᾱ_τ ŷ₀) / √(1 − ᾱ_τ)
            σ² = η² (1 − ᾱ_s)/(1 − ᾱ_τ) (1 − ᾱ_τ/ᾱ_s),  y ← √ᾱ_s ŷ₀ + √(1 − ᾱ_s − σ²) ε̂ + σ z
        η = 0 is deterministic given y_T; η = 1 matches ancestral sampling's variance. Passes: ``steps``.
        """
        T = self.cfg.num_steps
        if num_samples < 1 or not 1 <= steps <= T:
            raise ValueError(f"need num_samples ≥ 1 and 1 ≤ steps ≤ T = {T}, got {num_samples}, {steps}")
        taus = torch.linspace(T, 1, steps).round().long().unique_consecutive().tolist() + [0]
        y = torch.randn(num_samples, *self.info.shape, device=self.device)
        for tau, s in zip(taus[:-1], taus[1:]):
            t = torch.full((num_samples,), tau, device=self.device, dtype=torch.long)
            y0_hat, _ = self.predict_y0(y, t)
            a_t, a_s = self.abar[tau], self.abar[s]
            eps = (y - a_t.sqrt() * y0_hat) / (1 - a_t).sqrt()
            sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp_min(0).sqrt()
            y = a_s.sqrt() * y0_hat + (1 - a_s - sigma**2).clamp_min(0).sqrt() * eps + sigma * torch.randn_like(y)
        return from_symmetric(y, self.info.num_levels)

    # --- representation ----------------------------------------------------------------------------------
    def _embed(self, x):
        y0 = to_symmetric(x, self.info.num_levels)
        step = max(1, math.ceil(self.cfg.embed_fraction * self.cfg.num_steps))
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        mid, _ = self.net.bottleneck_and_output(self._gather("abar", t).sqrt() * y0, t)
        return mid.flatten(1)  # (B, F)
