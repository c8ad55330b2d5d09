"""DDPM: the discrete decoder normalises, the variational bound is a bound (≥ the entropy, Σ exp(−bound) ≤ 1 on an
enumerable image space) and becomes tight with the exact denoiser, and both samplers give valid images."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from dgmbench.distributions import to_symmetric
from dgmbench.models import get_model
from dgmbench.models.diffusion import discretized_gaussian_log_prob
from conftest import small_info

# A tiny image space: 1×2 images with 3 levels = 9 images, with a known distribution p.
INFO = small_info(shape=(1, 1, 2), num_levels=3)
GRID = torch.cartesian_prod(torch.arange(3), torch.arange(3)).view(9, 1, 1, 2)
P = torch.tensor([0.3, 0.02, 0.05, 0.1, 0.2, 0.03, 0.05, 0.05, 0.2], dtype=torch.float64)
ENTROPY = float(-(P * P.log()).sum())


def test_discretized_gaussian_normalises_and_matches_cdf():
    L = 17
    levels = torch.arange(L).view(1, L)  # one image of L "pixels", every level once
    for mean, std in ((0.13, 0.05), (-0.9, 0.3), (0.999, 0.01), (3.0, 0.02)):  # incl. far in a tail
        lp = discretized_gaussian_log_prob(torch.full((1, L), mean), std, levels.view(1, 1, L), L)
        per_level = torch.stack([discretized_gaussian_log_prob(torch.tensor([[mean]]), std, levels[:, k : k + 1], L)
                                 for k in range(L)]).squeeze(1)
        assert float(torch.logsumexp(per_level, 0)) == pytest.approx(0.0, abs=1e-9)
        assert float(lp) == pytest.approx(float(per_level.sum()), abs=1e-9)
        c = to_symmetric(torch.arange(L), L).double().numpy()
        h = 1 / (L - 1)
        ref = norm.cdf(c + h, mean, std) - norm.cdf(c - h, mean, std)
        ref[0], ref[-1] = norm.cdf(c[0] + h, mean, std), norm.sf(c[-1] - h, mean, std)
        mask = ref > 1e-200
        torch.testing.assert_close(per_level.exp()[mask], torch.from_numpy(ref)[mask], rtol=1e-6, atol=1e-12)


class ExactDenoiser(torch.nn.Module):
    """The optimal ε_θ(y_t, t) = E[ε | y_t] for data drawn from P over GRID (a posterior over 9 points)."""

    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.abar, self.centres, self.log_p = abar, to_symmetric(GRID, 3).view(9, -1), P.float().log()

    def forward(self, y, t):
        a = self.abar[t][:, None]  # (B, 1)
        yf = y.flatten(1)  # (B, 2)
        dist2 = ((yf[:, None, :] - a.sqrt()[:, :, None] * self.centres[None]) ** 2).sum(-1)  # (B, 9)
        w = (self.log_p[None] - dist2 / (2 * (1 - a))).softmax(1)
        return ((yf - a.sqrt() * (w @ self.centres)) / (1 - a).sqrt()).view_as(y)


def bound_per_image(model, repeats: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(9,) mean −log_prob of every image over ``repeats`` draws, and its standard error."""
    with torch.no_grad():
        b = -model.log_prob(GRID.repeat(repeats, 1, 1, 1)).view(repeats, 9).double()
    return b.mean(0), b.std(0) / math.sqrt(repeats)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_bound_with_exact_denoiser_is_a_tight_bound(schedule):
    """With the optimal denoiser the VLB is ≥ H(p) in expectation under p, Σ_x exp(−bound(x)) ≤ 1, and the gap is
    small at T = 100 (measured 0.10–0.18 nats; it shrinks as T grows)."""
    torch.manual_seed(0)
    model = get_model("diffusion", INFO, num_steps=100, schedule=schedule, channels=8).eval()
    model.net = ExactDenoiser(model.abar)
    b, se = bound_per_image(model)
    expected = float((P * b).sum())
    expected_se = float(((P * se) ** 2).sum().sqrt())
    assert expected >= ENTROPY - 3 * expected_se
    assert expected <= ENTROPY + 0.3, f"bound {expected:.3f} far from H = {ENTROPY:.3f}"
    assert float(torch.exp(-b).sum()) <= 1.0
    assert float(torch.exp(-b).sum()) > 0.7  # far from the trivial 0 of a loose bound


def test_bound_of_untrained_network_is_subnormalised():
    torch.manual_seed(0)
    model = get_model("diffusion", INFO, num_steps=20, channels=8).eval()
    b, _ = bound_per_image(model, repeats=20)
    assert (b > 0).all()
    assert float(torch.exp(-b).sum()) <= 1.0
    assert float((P * b).sum()) >= ENTROPY


def test_training_tightens_the_bound(digits):
    """A few L_simple steps on digits lower the (fixed-draw) validation bound."""
    torch.manual_seed(0)
    model = get_model("diffusion", digits.info, num_steps=50, channels=16)
    x = digits.train.x[:64]
    before = float(model.validation_score(x).mean())
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(30):
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(model.validation_score(x).mean())
    assert after < before, (before, after)


def test_samplers_give_valid_images(digits):
    torch.manual_seed(0)
    model = get_model("diffusion", digits.info, num_steps=30, channels=8).eval()
    assert model.sampling_passes == 30
    for s in (model.sample(6), model.sample_strided(6, steps=5), model.sample_strided(6, steps=5, eta=1.0),
              model.sample_strided(6, steps=30)):
        assert s.shape == (6, *digits.info.shape) and s.dtype == torch.long
        assert s.min() >= 0 and s.max() < digits.info.num_levels
    torch.manual_seed(1)
    a = model.sample_strided(4, steps=5)
    torch.manual_seed(1)
    assert torch.equal(a, model.sample_strided(4, steps=5))  # η = 0: deterministic given the seed
    with pytest.raises(ValueError):
        model.sample_strided(4, steps=31)


def test_builds_for_28x28():
    info = small_info(shape=(1, 28, 28), num_levels=256)
    model = get_model("diffusion", info, num_steps=4, channels=8, num_levels_unet=2).eval()
    x = torch.randint(0, 256, (2, 1, 28, 28))
    with torch.no_grad():
        assert model.log_prob(x).shape == (2,)
        assert model.sample(2).shape == (2, 1, 28, 28)
        assert model.embed(x).shape[0] == 2
