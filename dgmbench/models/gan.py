"""Generative adversarial network (Goodfellow et al., 2014), DCGAN-style convolutions (Radford et al., 2016).

An implicit model: a generator G maps noise z ~ N(0, I) to an image, x = G(z), with no density p(x) to
evaluate (``likelihood = NONE``). A discriminator D(x) ∈ ℝ (a logit) is trained to tell real images from
generated ones, and G is trained to fool it — a two-player game rather than the minimisation of one loss:

    nonsaturating (Goodfellow et al. 2014, §3):
        D maximises  E_x[log σ(D(x))] + E_z[log(1 − σ(D(G(z))))]
        G minimises −E_z[log σ(D(G(z)))]          (not log(1 − σ(D(G(z)))), which saturates early on)
    hinge (Lim & Ye 2017; Miyato et al. 2018):
        D minimises  E_x[max(0, 1 − D(x))] + E_z[max(0, 1 + D(G(z)))];   G minimises −E_z[D(G(z))]
    wgan-gp (Gulrajani et al. 2017): D is a critic,
        D minimises  E_z[D(G(z))] − E_x[D(x)] + λ E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²],  x̂ on lines between real and fake
        G minimises −E_z[D(G(z))]

Real images enter as levels mapped to [-1, 1] (``to_symmetric``); G ends in tanh and its samples are rounded to
the nearest level (``from_symmetric``). The family owns its update (``train_step``): one D step per call, and a
G step every ``d_steps`` calls. A game has no one loss that falls as training succeeds: G's loss rises while D
learns, D's rises back towards chance as G improves (for nonsaturating, 2 ln 2 ≈ 1.386 when D cannot tell). The
logged ``"loss"`` — the curve the trainer tracks — is the discriminator's loss ``d_loss``, the one minimised by
an ordinary classifier-style update (the generator loss or D+G does not decrease even on a fixed batch, so the
registry-wide "loss goes down" check would not hold); ``g_loss`` is logged beside it. Read neither as sample
quality: that is the ``sample_quality`` evaluator's job (metrics/fidelity.py).

Training is known to be unstable, so after each epoch ``check_diverged`` looks for mode collapse: the mean
pairwise distance between the epoch's generated images, relative to that between real images of the same
batches, falling below ``collapse_ratio`` (see :meth:`GAN.check_diverged`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import from_symmetric, to_symmetric
from ..optim import Adam, Optimizer
from .base import GenerativeModel, Likelihood, register_model


@dataclass
class GANConfig:
    latent_dim: int = 32  # dimensions of the noise z ~ N(0, I)
    g_channels: int = 64  # channels of the generator's first (smallest) feature map; halved at each upsampling
    d_channels: int = 32  # channels of the discriminator's first feature map; doubled at each downsampling
    objective: Literal["nonsaturating", "hinge", "wgan-gp"] = "nonsaturating"  # the adversarial game, see above
    spectral_norm: bool | None = None  # spectral normalisation of D (Miyato 2018); None = on, except for wgan-gp
    gp_weight: float = 10.0  # λ of the WGAN-GP gradient penalty
    d_steps: int = 1  # discriminator updates per generator update (5 is usual for wgan-gp)
    d_lr_scale: float = 1.0  # discriminator lr = train.lr × d_lr_scale
    beta1: float = 0.5  # Adam β1 of both optimisers (DCGAN's 0.5; 0.0 is usual for wgan-gp)
    beta2: float = 0.999  # Adam β2 of both optimisers
    collapse_ratio: float = 0.1  # mode collapse: sample diversity / data diversity below this → diverged
    collapse_after_epochs: int = 5  # the collapse test starts after this many epochs (an untrained G is flat)

    def validate(self):
        if min(self.latent_dim, self.g_channels, self.d_channels, self.d_steps) < 1:
            raise ValueError("latent_dim, g_channels, d_channels and d_steps must be ≥ 1")
        if self.gp_weight < 0 or self.d_lr_scale <= 0:
            raise ValueError("gp_weight must be ≥ 0 and d_lr_scale > 0")
        if not 0 <= self.collapse_ratio < 1:
            raise ValueError(f"collapse_ratio must be in [0, 1), got {self.collapse_ratio}")


def num_resamplings(height: int, width: int, most: int = 2) -> int:
    """How many ×2 up/downsamplings the image size allows (2 for 8×8, 28×28, 32×32; 0 for odd sizes)."""
    n = 0
    while n < most and height % 2 ** (n + 1) == 0 and width % 2 ** (n + 1) == 0:
        n += 1
    return n


class Generator(nn.Module):
    """z (B, M) → image (B, C, H, W) in [-1, 1]: a linear map to a small feature map, then transposed convs."""

    def __init__(self, latent_dim: int, channels: int, shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = shape
        n_up = num_resamplings(h, w)
        self.h0, self.w0, self.ch = h // 2**n_up, w // 2**n_up, channels
        self.fc = nn.Sequential(nn.Linear(latent_dim, channels * self.h0 * self.w0, bias=False),
                                nn.BatchNorm1d(channels * self.h0 * self.w0), nn.ReLU())
        layers: list[nn.Module] = []
        ch = channels
        for _ in range(n_up):  # each doubles H and W: kernel 4, stride 2, padding 1
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.ch, self.h0, self.w0)  # (B, ch, H/4, W/4)
        return self.body(h)  # (B, C, H, W)


class Discriminator(nn.Module):
    """image (B, C, H, W) in [-1, 1] → logit (B,); ``features`` is the flattened last feature map (penultimate)."""

    def __init__(self, channels: int, shape: tuple[int, int, int], spectral: bool):
        super().__init__()
        c, h, w = shape
        n_down = num_resamplings(h, w)
        sn = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(c, channels, 3, 1, 1)), nn.LeakyReLU(0.2)]
        ch = channels
        for _ in range(n_down):  # each halves H and W (no batch norm: WGAN-GP penalises per-sample gradients)
            layers += [sn(nn.Conv2d(ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.2)]
            ch *= 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.num_features = ch * (h // 2**n_down) * (w // 2**n_down)
        self.head = sn(nn.Linear(self.num_features, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)  # (B,)


# ------------------------------------------------------------------------------ the games, as pure functions
def d_loss_nonsaturating(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # −log σ(D(x)) − log(1 − σ(D(G(z)))) = softplus(−D(x)) + softplus(D(G(z)))
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()  # −log σ(D(G(z)))


def d_loss_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def d_loss_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def g_loss_critic(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()  # hinge and WGAN generators raise the critic's score of their samples


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(‖∇_x̂ D(x̂)‖₂ − 1)²] at x̂ = u·real + (1 − u)·fake, u ~ U(0, 1) per image (Gulrajani et al. 2017)."""
    u = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x_hat = (u * real + (1 - u) * fake).requires_grad_(True)  # (B, C, H, W)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


GAMES = {  # objective → (discriminator loss, generator loss)
    "nonsaturating": (d_loss_nonsaturating, g_loss_nonsaturating),
    "hinge": (d_loss_hinge, g_loss_critic),
    "wgan-gp": (d_loss_wasserstein, g_loss_critic),
}


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between the distinct pairs of a batch (B, ...) → scalar."""
    d = torch.cdist(x.flatten(1), x.flatten(1))  # (B, B)
    n = x.shape[0]
    return d.sum() / max(n * (n - 1), 1)


@register_model("gan")
class GAN(GenerativeModel):
    family = "implicit (GAN)"
    loss_name = "discriminator loss (BCE on real + fake, nats/image)"
    description = "DCGAN: conv generator/discriminator; nonsaturating, hinge+SN or WGAN-GP game; no likelihood"
    Config = GANConfig
    likelihood = Likelihood.NONE
    can_sample = True
    can_embed = True
    embed_note = "discriminator penultimate features (flattened last conv feature map)"
    # 1000 images / 64 = 16 steps per epoch; no validation score, so no early stopping: the last epoch is kept.
    train_defaults = {"max_epochs": 100, "patience": 0, "batch_size": 64, "lr": 2e-4}

    def __init__(self, cfg: GANConfig, info):
        super().__init__(cfg, info)
        # Without SN, D overpowers G within ~10 epochs on digits and G collapses (measured); WGAN-GP has its penalty.
        spectral = cfg.spectral_norm if cfg.spectral_norm is not None else cfg.objective != "wgan-gp"
        self.generator = Generator(cfg.latent_dim, cfg.g_channels, info.shape)
        self.discriminator = Discriminator(cfg.d_channels, info.shape, spectral)
        self.d_loss_fn, self.g_loss_fn = GAMES[cfg.objective]
        self._calls = 0  # train_step calls so far, for the D/G step ratio (not saved: a ratio, not a state)

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizers(self, train_cfg) -> list[Optimizer]:
        """[opt_g, opt_d]: two Adams with the DCGAN betas; D's learning rate is scaled by ``d_lr_scale``."""
        betas = (self.cfg.beta1, self.cfg.beta2)
        opt_g = Adam(self.generator.parameters(), lr=train_cfg.lr, betas=betas,
                                 weight_decay=train_cfg.weight_decay)
        opt_d = Adam(self.discriminator.parameters(), lr=train_cfg.lr * self.cfg.d_lr_scale,
                                 betas=betas, weight_decay=train_cfg.weight_decay)
        return [opt_g, opt_d]

    def train_step(self, x, optimizers, train_cfg) -> dict[str, float]:
        """One D step on the batch, and a G step every ``d_steps`` calls.

        Returns ``loss`` (= ``d_loss``, see the module docstring), ``d_loss``, ``g_loss``, ``d_real``/``d_fake``
        (mean D logits) and ``diversity_ratio`` (mean pairwise distance of the generated batch / of the real
        batch, the mode-collapse signal; the trainer averages it over the epoch).
        """
        opt_g, opt_d = optimizers
        real = to_symmetric(self.check_input(x), self.info.num_levels)  # (B, C, H, W) in [-1, 1]
        B = real.shape[0]

        # Discriminator step: G's samples are constants here.
        with torch.no_grad():
            fake = self.generator(torch.randn(B, self.cfg.latent_dim, device=real.device))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        d_loss = self.d_loss_fn(d_real, d_fake)
        if self.cfg.objective == "wgan-gp":
            d_loss = d_loss + self.cfg.gp_weight * gradient_penalty(self.discriminator, real, fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self._clip(self.discriminator, train_cfg)
        opt_d.step()

        # Generator step (every d_steps-th call); otherwise report its loss on the D step's samples.
        self._calls += 1
        if self._calls % self.cfg.d_steps == 0:
            fake = self.generator(torch.randn(B, self.cfg.latent_dim, device=real.device))
            g_loss = self.g_loss_fn(self.discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self._clip(self.generator, train_cfg)
            opt_g.step()
        else:
            g_loss = self.g_loss_fn(d_fake.detach())
        with torch.no_grad():
            ratio = mean_pairwise_distance(fake) / mean_pairwise_distance(real).clamp_min(1e-8)
        g, d = float(g_loss.detach()), float(d_loss.detach())
        return {"loss": d, "g_loss": g, "d_loss": d, "d_real": float(d_real.detach().mean()),
                "d_fake": float(d_fake.detach().mean()), "diversity_ratio": float(ratio)}

    @staticmethod
    def _clip(module: nn.Module, train_cfg) -> None:
        if train_cfg.grad_clip:
            nn.utils.clip_grad_norm_(module.parameters(), train_cfg.grad_clip)

    @torch.no_grad()
    def validation_score(self, x):
        return None  # no likelihood and no agreed sample score: no early stopping, the last epoch is kept

    def check_diverged(self, epoch_logs: dict[str, float]) -> str | None:
        """NaN/inf losses, or mode collapse.

        Mode collapse: ``train_diversity_ratio`` — the epoch's mean over batches of (mean pairwise L2 distance
        between the generated images) / (the same between the real images), in the [-1, 1] scale — below
        ``collapse_ratio`` (default 0.1: samples ten times closer to one another than real images are), from
        epoch ``collapse_after_epochs`` on. A healthy generator scores near 1; a collapsed one near 0.
        """
        for key in ("train_loss", "train_d_loss", "train_g_loss"):
            if key in epoch_logs and not math.isfinite(epoch_logs[key]):
                return f"non-finite {key[6:]}"
        ratio = epoch_logs.get("train_diversity_ratio")
        if ratio is not None and epoch_logs.get("epoch", 0) >= self.cfg.collapse_after_epochs:
            if ratio < self.cfg.collapse_ratio:
                return (f"mode collapse: sample diversity {ratio:.3f} of the data's "
                        f"(< collapse_ratio {self.cfg.collapse_ratio})")
        return None

    # --- the public contract -----------------------------------------------------------------------------
    def _sample(self, num_samples):
        z = torch.randn(num_samples, self.cfg.latent_dim, device=self.device)
        return from_symmetric(self.generator(z), self.info.num_levels)  # (N, C, H, W) levels

    def _embed(self, x):
        return self.discriminator.features(to_symmetric(x, self.info.num_levels))  # (B, F)
