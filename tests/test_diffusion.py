"""DDPM with a categorical x₀ posterior: the reverse steps and decoder normalise, the VLB and the IW-VLB are bounds
(≥ the entropy, Σ exp(−bound) ≤ 1 on an enumerable image space), the VLB is exact for factorised data with the
exact posterior at any T, the IW-VLB equals the VLB in expectation at K = 1 and tightens with K, the logged
validation score is on the VLB's scale, and both samplers give valid images."""

from __future__ import annotations

import math

import pytest
import torch

from dgmbench.distributions import to_symmetric
from dgmbench.models import get_model
from conftest import small_info

# A tiny image space: 1×2 images with 3 levels = 9 images, with a known distribution p.
INFO = small_info(shape=(1, 1, 2), num_levels=3)
GRID = torch.cartesian_prod(torch.arange(3), torch.arange(3)).view(9, 1, 1, 2)
P = torch.tensor([0.3, 0.02, 0.05, 0.1, 0.2, 0.03, 0.05, 0.05, 0.2], dtype=torch.float64)
ENTROPY = float(-(P * P.log()).sum())


class ExactPosterior(torch.nn.Module):
    """The network output that makes π_θ(x_d | y_t) the exact posterior marginal of pixel d for data x ~ p over
    GRID: log p(x_d = k | y_t) minus the likelihood term the model adds back (``Diffusion.posterior_logits``)."""

    def __init__(self, model, p: torch.Tensor):
        super().__init__()
        self.model, self.log_p = [model], p.log()  # a list: not a submodule of the model it is part of
        self.centres = to_symmetric(GRID, 3).view(9, 2).double()

    def forward(self, y, t):
        abar = self.model[0].abar[t][:, None, None].double()  # (B, 1, 1)
        c = to_symmetric(torch.arange(3), 3).double()
        yf = y.flatten(1).double()  # (B, 2)
        lik = -((yf[:, :, None] - abar.sqrt() * c) ** 2) / (2 * (1 - abar))  # (B, 2, 3) log q(y_d | c_k) + const
        joint = self.log_p[None] + lik.gather(2, GRID.view(1, 9, 2).permute(0, 2, 1).expand(len(y), 2, 9)).sum(1)
        post = joint.log_softmax(1)  # (B, 9) log p(x | y_t)
        marg = torch.stack([torch.stack([torch.logsumexp(post[:, GRID.view(9, 2)[:, d] == k], 1) for k in range(3)], 1)
                            for d in range(2)], 1)  # (B, 2, 3)
        return (marg - lik).permute(0, 2, 1).reshape(len(y), 3, 1, 2).float()  # (B, C·L, H, W), C = 1


def exact_model(p: torch.Tensor, **hparams):
    model = get_model("diffusion", INFO, channels=8, **hparams).eval()
    model.net = ExactPosterior(model, p)
    return model


def random_model(num_steps: int = 20):
    """An untrained model with a random read-out: its bound is loose (with the zero-initialised read-out the model
    is the uniform distribution, for which the bound is exact)."""
    torch.manual_seed(0)
    model = get_model("diffusion", INFO, num_steps=num_steps, channels=8).eval()
    torch.nn.init.normal_(model.net.conv_out.weight, std=1.0)
    torch.nn.init.normal_(model.net.conv_out.bias, std=1.0)
    return model


def repeated(fn, repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(9,) mean over ``repeats`` draws of fn(every image) and its standard error."""
    with torch.no_grad():
        b = fn(GRID.repeat(repeats, 1, 1, 1)).view(repeats, 9).double()
    return b.mean(0), b.std(0) / math.sqrt(repeats)


def test_posterior_normalises_and_is_the_uniform_prior_posterior_at_init():
    """Zero network output (the initial state): π(· | y_t) is exactly p(x_d | y_t) under a uniform prior."""
    torch.manual_seed(0)
    model = get_model("diffusion", INFO, num_steps=10, channels=8).eval()
    y, t = torch.randn(5, 1, 1, 2), torch.tensor([1, 2, 5, 9, 10])
    with torch.no_grad():
        log_pi = model.posterior_logits(y, t)  # (5, 1, 1, 2, 3)
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(5, 1, 1, 2))
    abar = model.abar[t].view(5, 1, 1, 1, 1)
    c = to_symmetric(torch.arange(3), 3).double()
    dens = torch.exp(-((y.double()[..., None] - abar.sqrt() * c) ** 2) / (2 * (1 - abar)))
    torch.testing.assert_close(log_pi.exp(), (dens / dens.sum(-1, keepdim=True)).float())


def test_step_log_ratio_matches_the_densities():
    """The cancellation-free step ratio equals log Σ_k π_k N(y; μ̃(c_k), β̃) − log N(y; μ̃(y₀), β̃) computed directly."""
    torch.manual_seed(0)
    model = get_model("diffusion", INFO, num_steps=10, channels=8).eval()
    x = GRID[[1, 4, 8]]
    y0 = to_symmetric(x, 3)
    t = torch.tensor([2, 5, 10])
    y_t, z = torch.randn(3, 1, 1, 2), torch.randn(3, 1, 1, 2)
    log_pi = torch.randn(3, 1, 1, 2, 3).double().log_softmax(-1)
    got = model.step_log_ratio(log_pi, y0, t, z)
    var = model.post_var[t].view(3, 1, 1, 1)
    y_prev = model.posterior_mean(y0, y_t, t) + var.sqrt() * z.double()
    normal = torch.distributions.Normal
    comp = torch.stack([normal(model.posterior_mean(torch.full_like(y0, float(c)), y_t, t), var.sqrt()).log_prob(y_prev)
                        for c in model.centres], -1)
    want = torch.logsumexp(log_pi + comp, -1) - normal(model.posterior_mean(y0, y_t, t), var.sqrt()).log_prob(y_prev)
    torch.testing.assert_close(got, want.flatten(1).sum(1))


def test_reverse_step_is_the_moment_matched_mixture():
    """A draw of the mixture step has mean μ̃_t(E_π y₀, y_t) and variance β̃_t + coef_y0² Var_π(y₀) ≥ β̃_t: the variance
    a Gaussian step would have to learn (Nichol & Dhariwal 2021) follows from the posterior's uncertainty."""
    model = random_model(num_steps=20)
    y_t = torch.randn(1, 1, 1, 2).repeat(20000, 1, 1, 1)
    for step in (2, 10, 20):
        t = torch.full((1,), step)
        with torch.no_grad():
            pi = model.posterior_logits(y_t[:1], t).exp().double()  # (1, 1, 1, 2, 3)
        m1, m2 = pi @ model.centres, pi @ model.centres**2
        mean = model.posterior_mean(m1, y_t[:1], t)
        var = model.post_var[step] + model.coef_y0[step] ** 2 * (m2 - m1**2)
        assert (var >= model.post_var[step]).all()
        torch.manual_seed(step)
        _, y = model.reverse_step(y_t, step)
        se = (var / len(y)).sqrt()
        torch.testing.assert_close(y.double().mean(0, keepdim=True), mean, atol=float(5 * se.max()), rtol=0)
        torch.testing.assert_close(y.double().var(0, keepdim=True), var, atol=0, rtol=0.05)


@pytest.mark.parametrize("num_steps", [3, 30])
def test_vlb_is_exact_for_factorised_data_with_the_exact_posterior(num_steps):
    """For p(x) = p₁(x₁) p₂(x₂) the mixture reverse step with the exact marginals is the true reverse step, so the
    bound is −log p(x) for every T (up to L_T ≈ 1e-8): the bound measures the model, not the step count."""
    torch.manual_seed(0)
    p = torch.outer(torch.tensor([0.6, 0.1, 0.3]), torch.tensor([0.2, 0.5, 0.3])).flatten().double()
    model = exact_model(p, num_steps=num_steps)
    b, se = repeated(lambda x: -model.log_prob(x), 200)
    torch.testing.assert_close(b, -p.log(), atol=float(4 * se.max()) + 1e-3, rtol=0)
    iw, se_iw = repeated(lambda x: -model.log_prob_iwae(x, 2), 100)
    torch.testing.assert_close(iw, -p.log(), atol=float(4 * se_iw.max()) + 1e-3, rtol=0)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_bound_with_exact_posterior_is_a_tight_bound(schedule):
    """Correlated p: with the exact per-pixel posteriors the VLB is ≥ H(p) in expectation under p, Σ_x exp(−bound(x))
    ≤ 1, and the gap (the posterior's correlation the factorised step leaves out) is small at T = 100."""
    torch.manual_seed(0)
    model = exact_model(P, num_steps=100, schedule=schedule)
    b, se = repeated(lambda x: -model.log_prob(x), 400)
    expected = float((P * b).sum())
    expected_se = float(((P * se) ** 2).sum().sqrt())
    assert expected >= ENTROPY - 3 * expected_se
    assert expected <= ENTROPY + 0.1, f"bound {expected:.3f} far from H = {ENTROPY:.3f}"
    total, total_se = float(torch.exp(-b).sum()), float(((torch.exp(-b) * se) ** 2).sum().sqrt())
    assert total <= 1.0 + 3 * total_se  # the bound is so tight here that its Monte Carlo error shows
    assert total > 0.9  # far from the trivial 0 of a loose bound


def test_iw_bound_equals_vlb_at_k1_and_tightens_with_k():
    """The one-trajectory estimate (log_prob, = IW-VLB-1) and the per-t one agree in expectation; E[IW-VLB-K] is non-increasing in K
    and stays ≥ −log p(x) in expectation over images (≥ H(p)); exp(IW-VLB-K) is unbiased for p(x), Σ ≈ 1."""
    model = random_model()
    vlb, se_vlb = repeated(lambda x: -model.log_prob(x), 400)
    iw1, se_iw1 = repeated(lambda x: -model.marginal_log_prob(x), 400)  # independent draws per t
    assert (vlb - iw1).abs().max() <= 4 * (se_vlb**2 + se_iw1**2).sqrt().max()
    estimates = [(iw1, se_iw1)]
    for k in (4, 16):
        estimates.append(repeated(lambda x: -model.log_prob_iwae(x, k), 100))
    for (looser, se_l), (tighter, se_t) in zip(estimates, estimates[1:]):  # per image, within 3 s.e. of the draws
        assert (tighter <= looser + 3 * (se_l**2 + se_t**2).sqrt()).all(), (looser, tighter)
    means = [m for m, _ in estimates]
    assert float((means[-1] - means[0]).mean()) < -0.05  # it does tighten
    assert float((P * means[-1]).sum()) >= ENTROPY
    assert float(torch.exp(-means[-1]).sum()) <= 1.0


def test_bound_of_untrained_network_is_subnormalised():
    model = random_model()
    b, _ = repeated(lambda x: -model.log_prob(x), 20)
    assert (b > 0).all()
    assert float(torch.exp(-b).sum()) <= 1.0
    assert float((P * b).sum()) >= ENTROPY


def test_training_tightens_the_bound(digits):
    """A few cross-entropy steps on digits lower the (fixed-draw) validation bound."""
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


def test_validation_score_is_on_the_vlb_scale(digits):
    """The logged validation NLL (stratified t, fixed draws) is within 2 nats of the VLB on the same images."""
    torch.manual_seed(0)
    model = get_model("diffusion", digits.info, num_steps=50, channels=8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        loss, _ = model.loss(digits.train.x[torch.randint(0, 1000, (64,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = digits.val.x[:64]
    with torch.no_grad():
        vlb = float(torch.stack([-model.log_prob(x) for _ in range(4)]).mean())
    val = float(model.validation_score(x).mean())
    assert abs(val - vlb) <= 2.0, (val, vlb)
    assert vlb < 64 * math.log(17)  # trained: better than the uniform distribution


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
        assert model.log_prob_iwae(x, 3).shape == (2,)
        assert model.sample(2).shape == (2, 1, 28, 28)
        assert model.embed(x).shape[0] == 2
