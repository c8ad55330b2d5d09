"""The likelihood code against analytic answers: unit conversions, the discrete likelihoods in
``dgmbench.distributions`` (normalised over the L levels, equal to a direct computation from the logistic CDF),
and the evaluator ``metrics/likelihood.py`` on a model whose likelihood is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dgmbench.distributions import (
    bits_per_dim_to_nats,
    categorical_log_prob,
    discretized_logistic_log_prob,
    nats_to_bits_per_dim,
    to_symmetric,
)
from conftest import make_ctx
from dgmbench.metrics.likelihood import (LikelihoodConfig, evaluate_likelihood, histogram_log_prob,
                                         jackknife_log_mean_exp, nll_summary)


# ------------------------------------------------------------------------------------------------ units
def test_bits_per_dim_known_values_and_round_trip():
    for D in (1, 64, 784, 3072):
        assert nats_to_bits_per_dim(D * math.log(2), D) == pytest.approx(1.0)  # D·ln2 nats = 1 bit/dim
        assert bits_per_dim_to_nats(8.0, D) == pytest.approx(8 * D * math.log(2))
        # a uniform distribution over L levels costs log2(L) bits per dimension
        assert nats_to_bits_per_dim(D * math.log(17), D) == pytest.approx(math.log2(17))
    nats = torch.tensor([0.0, 1.5, 94.7, 1e4], dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim_to_nats(nats_to_bits_per_dim(nats, 64), 64), nats)
    bpd = torch.tensor([0.0, 0.9, 2.13, 8.0], dtype=torch.float64)
    torch.testing.assert_close(nats_to_bits_per_dim(bits_per_dim_to_nats(bpd, 784), 784), bpd)


# ------------------------------------------------------------------------------------ categorical levels
@pytest.mark.parametrize("scale", [0.0, 1.0, 30.0, 1e4])
def test_categorical_normalises_and_matches_softmax(scale):
    """Σ_l Cat(l | softmax(logits)) = 1 per dimension, for flat, ordinary and extreme logits."""
    torch.manual_seed(0)
    L, dims = 17, 5
    logits = scale * torch.randn(3, L, dims, dtype=torch.float64)  # (B, L, dims)
    # log P of the image whose every dimension takes level l, summed over dims, for each l: (L, B)
    per_level = torch.stack([categorical_log_prob(logits, torch.full((3, dims), l)) for l in range(L)])
    # with one dimension, the L probabilities must sum to one
    one = torch.stack([categorical_log_prob(logits[..., :1], torch.full((3, 1), l)) for l in range(L)])
    torch.testing.assert_close(one.logsumexp(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    # and the log-probability of an image is the sum of its dimensions' log-softmax values
    direct = torch.log_softmax(logits, dim=1).sum(2).T  # (L, B)
    torch.testing.assert_close(per_level, direct, atol=1e-9, rtol=1e-12)


# ------------------------------------------------------------------------ discretised logistic levels
def logistic_bin_probs(mean: float, log_scale: float, L: int) -> torch.Tensor:
    """(L,) bin masses F(upper) − F(lower) from the logistic CDF F(y) = σ((y − μ)/s) in float64, the end bins open
    to ∓∞. Bin k is [(2k − 1)/(L−1) − 1, (2k + 1)/(L−1) − 1], so neighbouring bins share their edge exactly."""
    k = torch.arange(L, dtype=torch.float64)
    upper, lower = (2 * k + 1) / (L - 1) - 1.0, (2 * k - 1) / (L - 1) - 1.0
    upper[-1], lower[0] = math.inf, -math.inf
    s = math.exp(log_scale)
    return torch.sigmoid((upper - mean) / s) - torch.sigmoid((lower - mean) / s)


def all_level_log_probs(mean: float, log_scale: float, L: int, dtype) -> torch.Tensor:
    """(L,) log P(x = l) from discretized_logistic_log_prob, one single-pixel image per level l."""
    x = torch.arange(L).view(L, 1, 1, 1)
    m = torch.full((L, 1, 1, 1), mean, dtype=dtype)
    s = torch.full((L, 1, 1, 1), log_scale, dtype=dtype)
    return discretized_logistic_log_prob(m, s, x, L)


MEANS = [-1.0, -0.37, 0.0, 0.5, 1.0, -4.0, 6.0]  # inside, on the ends of, and far outside [-1, 1]
LOG_SCALES = [-7.0, -4.0, -1.5, 0.0, 3.0]  # from a spike narrower than a bin (-7 is the decoders' clamp) to flat


@pytest.mark.parametrize("L", [2, 17, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_normalises(L, dtype):
    """The L bin probabilities sum to one for every mean and scale, extreme ones included."""
    # Exact bin masses (no tail approximation) and edges that tile: one up to float rounding.
    tol = 1e-6
    for mean in MEANS:
        for log_scale in LOG_SCALES:
            total = float(all_level_log_probs(mean, log_scale, L, dtype).double().exp().sum())
            assert total == pytest.approx(1.0, abs=tol), (L, mean, log_scale, total)


@pytest.mark.parametrize("L", [2, 17, 256])
def test_discretized_logistic_matches_logistic_cdf(L):
    """Each level's probability equals F(upper edge) − F(lower edge) of the logistic, computed directly."""
    for mean in MEANS:
        for log_scale in LOG_SCALES:
            ref = logistic_bin_probs(mean, log_scale, L)  # (L,)
            got = all_level_log_probs(mean, log_scale, L, torch.float64)
            torch.testing.assert_close(got.exp(), ref, atol=1e-12, rtol=0)
            big = ref > 1e-8  # below this the reference σ(b) − σ(a) itself loses digits to cancellation
            torch.testing.assert_close(got[big], ref[big].log(), atol=1e-6, rtol=0)


def test_discretized_logistic_tail_branch_is_accurate_for_broad_scales():
    """Far in the tail of a broad logistic (bin ≪ scale) the masses underflow the difference of CDFs and the code
    uses density × bin width; that must still agree with the exact mass (computed stably in float64)."""
    L, mean, log_scale = 256, -1.0, -2.5  # s ≈ 0.08, bins of width 0.0078: mass at the far end ≈ 1e-10
    x = torch.arange(L)
    got = all_level_log_probs(mean, log_scale, L, torch.float32).double()
    # exact log mass of the inner bins: log(F(u) − F(l)) = log σ(u') + log(1 − e^{l'−u'}) + log σ(−l')
    s = math.exp(log_scale)
    centre = to_symmetric(x, L).double()
    hi, lo = (centre + 1 / (L - 1) - mean) / s, (centre - 1 / (L - 1) - mean) / s
    exact = torch.nn.functional.logsigmoid(-lo) + torch.log(-torch.expm1(lo - hi)) + torch.nn.functional.logsigmoid(hi)
    inner = slice(1, L - 1)
    assert got[inner].min() < math.log(1e-5) - 5, "the test must reach the tail branch"
    torch.testing.assert_close(got[inner], exact[inner], atol=2e-2, rtol=0)


# --------------------------------------------------------------------------------------------- evaluator
def test_evaluator_on_a_uniform_vae(digits):
    """A VAE whose decoder outputs flat logits and whose encoder outputs q = N(0, I) = p(z) has
    ELBO = IWAE-k = log p(x) = −D ln L exactly, so the evaluator must report log2(L) bits/dim, no gap, no spread."""
    from dgmbench.models import get_model

    torch.manual_seed(0)
    model = get_model("vae", digits.info, hidden_dim=16, latent_dim=3).eval()
    for last in (model.encoder[-1], model.decoder[-1]):
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    out = evaluate_likelihood(make_ctx(model, digits), LikelihoodConfig(iwae_k=7, iwae_repeats=2, batch_size=100))
    D, L = digits.info.num_dims, digits.info.num_levels
    assert out.type == "bound" and out.estimator == "IWAE-7" and out.num_images == len(digits.test.x)
    assert out.nll_nats == pytest.approx(D * math.log(L), rel=1e-6)
    assert out.bound_nats == pytest.approx(D * math.log(L), rel=1e-6)
    assert out.nll_bpd == pytest.approx(math.log2(L), rel=1e-6)
    assert out.bound_gap_nats == pytest.approx(0.0, abs=1e-3)
    assert out.stderr_nats == pytest.approx(0.0, abs=1e-4) and out.sem_images_nats == pytest.approx(0.0, abs=1e-4)
    assert out.uniform_nll_nats == pytest.approx(out.nll_nats, rel=1e-6)  # this VAE is the uniform distribution


class _NoisyBound(torch.nn.Module):
    """A bound family whose ELBO is −100 and whose IWAE estimate is −96 + independent N(0, σ²) noise per image and
    call: the estimator's standard error over N images and R repeats is then σ / √(N R)."""

    from dgmbench.models import Likelihood

    likelihood = Likelihood.BOUND
    estimator = "ELBO"
    supports_iwae = True
    iwae_weights = False  # only the log-mean-exp: its s.e. comes from repeats

    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def log_prob(self, x):
        return torch.full((len(x),), -100.0)

    def log_prob_iwae(self, x, k):
        return -96.0 + self.sigma * torch.randn(len(x), generator=self.gen, dtype=torch.float64)


def test_evaluator_standard_error_and_gap_against_the_known_noise(digits):
    sigma, R = 2.0, 3
    ctx = make_ctx(_NoisyBound(sigma), digits)
    out = evaluate_likelihood(ctx, LikelihoodConfig(iwae_k=5, iwae_repeats=R, bound_repeats=2))
    N = len(digits.test.x)
    assert out.estimator == "IWAE-5" and out.iwae_k == 5 and out.repeats == R
    assert out.nll_nats == pytest.approx(96.0, abs=4 * sigma / math.sqrt(N * R))
    # √(mean_i s_i² / (N R)) with s_i² on 2 degrees of freedom each, averaged over 447 images: within ~15%
    assert out.stderr_nats == pytest.approx(sigma / math.sqrt(N * R), rel=0.15)
    assert out.bound_estimator == "ELBO" and out.bound_nats == pytest.approx(100.0)
    assert out.bound_stderr_nats == 0.0  # this ELBO happens to be deterministic: its repeats agree exactly
    assert out.bound_gap_nats == pytest.approx(100.0 - out.nll_nats)
    assert out.nll_bpd == pytest.approx(out.nll_nats / (digits.info.num_dims * math.log(2)))
    assert type(out).from_dict(out.to_dict()) == out


def test_jackknife_is_the_leave_one_out_formula():
    """Against the definition, image by image, including an image where one weight dominates by e^700 (where
    log(Σ − w_j) by subtraction would cancel to −inf or NaN)."""
    gen = torch.Generator().manual_seed(0)
    log_w = torch.randn(7, 4, generator=gen, dtype=torch.float64) * 3
    log_w[2, 3] = 700.0
    estimate, variance = jackknife_log_mean_exp(log_w)
    for i in range(log_w.shape[1]):
        col = log_w[:, i]
        loo = torch.stack([torch.logsumexp(torch.cat([col[:j], col[j + 1 :]]), 0) - math.log(6) for j in range(7)])
        assert float(estimate[i]) == pytest.approx(float(torch.logsumexp(col, 0) - math.log(7)), rel=1e-12)
        assert float(variance[i]) == pytest.approx(float(6 / 7 * ((loo - loo.mean()) ** 2).sum()), rel=1e-9, abs=1e-12)
    assert torch.isfinite(variance).all() and float(variance[3]) > 100  # leaving out the giant moves θ̂ by ~700
    with pytest.raises(ValueError, match="k ≥ 2"):
        jackknife_log_mean_exp(log_w[:1])


@pytest.mark.parametrize("k, sigma", [(8, 1.0), (8, 2.0), (64, 2.0)])
def test_jackknife_variance_does_not_understate_the_spread_of_repeats(k, sigma):
    """Log-normal weights (log w ~ N(0, σ²), heavy-tailed for σ = 2) in 4,000 independent columns: the mean
    jackknife variance of the log-mean-exp against its variance across the columns, the repeat-based answer. By
    Efron–Stein it is ≥ 1 in expectation; measured 1.06–1.11 here. The bound tolerates the Monte Carlo error of the
    spread (√(2/4000) ≈ 2%)."""
    gen = torch.Generator().manual_seed(k)
    estimate, variance = jackknife_log_mean_exp(sigma * torch.randn(k, 4000, generator=gen, dtype=torch.float64))
    ratio = float(variance.mean() / estimate.var())
    assert 0.93 <= ratio <= 2.0, ratio


def test_one_draw_gets_its_standard_error_by_the_jackknife(digits):
    """The evaluator's default for a family that gives its weights: one draw of IWAE-k, s.e. by the jackknife; the
    s.e. is of the size the spread of independent draws shows (within a factor 2 on 447 images)."""
    from dgmbench.models import get_model

    torch.manual_seed(0)
    model = get_model("vae", digits.info, hidden_dim=16, latent_dim=3).eval()  # untrained: wide weights
    ctx = make_ctx(model, digits)
    one = evaluate_likelihood(ctx, LikelihoodConfig(iwae_k=16, iwae_repeats=1))
    assert one.repeats == 1 and one.stderr_method == "jackknife over the 16 samples" and one.stderr_nats > 0
    many = evaluate_likelihood(ctx, LikelihoodConfig(iwae_k=16, iwae_repeats=6))
    assert many.stderr_method == "6 repeats" and many.repeats == 6
    spread = many.stderr_nats * math.sqrt(6)  # the s.e. of one draw, from the spread of six
    assert 0.5 * spread <= one.stderr_nats <= 2.0 * spread, (one.stderr_nats, spread)
    assert abs(one.nll_nats - many.nll_nats) <= 4 * math.hypot(one.stderr_nats, many.stderr_nats)


def test_nll_summary_closed_form():
    """Two repeats over three images: mean, per-image variance across repeats, and the s.e. over images."""
    lp = -torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=torch.float64)  # (R = 2, N = 3)
    mean, stderr, sem = nll_summary(lp)
    assert mean == pytest.approx(2.0)
    assert stderr == pytest.approx(math.sqrt((2.0 + 0.0 + 2.0) / 3 / (3 * 2)))  # s_i² = 2, 0, 2
    assert sem == pytest.approx(0.0)  # the per-image means are all 2
    assert nll_summary(lp[:1])[1] is None  # one repeat of a stochastic estimate: its s.e. is not estimable
    assert nll_summary(lp[:1], stochastic=False)[1] == 0.0  # a deterministic value


class _PixelSum(torch.nn.Module):
    """An 'exact' stand-in whose log p(x) = −(sum of x's levels): each image's score tells which image it was."""

    from dgmbench.models import Likelihood

    likelihood = Likelihood.EXACT
    estimator = "exact"
    supports_iwae = False

    def log_prob(self, x):
        return -x.flatten(1).double().sum(1)


def test_evaluator_scores_exactly_the_fixed_test_subset(digits):
    """The context's test subset of n distinct images, the same on every call, is what the evaluator scores and
    records; n ≥ the split size (or 0) is the whole split. The baselines are computed on the same images."""
    from dgmbench.metrics import TestSubset, TestSubsetConfig, indices_hash

    x = digits.test.x
    whole = evaluate_likelihood(make_ctx(_PixelSum(), digits), LikelihoodConfig(batch_size=64))
    assert whole.num_images == len(x) and whole.stderr_nats == 0.0 and whole.repeats == 1
    assert whole.nll_nats == pytest.approx(float(x.flatten(1).double().sum(1).mean()))
    assert TestSubset.choose(len(x), TestSubsetConfig(max_images=len(x) + 5))[0].num_images == len(x)

    ctx = make_ctx(_PixelSum(), digits, max_images=100)
    part = evaluate_likelihood(ctx, LikelihoodConfig(batch_size=7))
    subset, idx = TestSubset.choose(len(x), TestSubsetConfig(max_images=100))
    assert len(set(idx.tolist())) == 100 and subset.num_split == len(x) and subset.label == f"100 of {len(x)}"
    assert part.num_images == 100 and part.images_sha1 == indices_hash(idx) == ctx.subset.indices_sha1
    assert np.array_equal(idx, TestSubset.choose(len(x), TestSubsetConfig(max_images=100))[1])  # fixed
    assert part.nll_nats == pytest.approx(float(x[torch.from_numpy(idx)].flatten(1).double().sum(1).mean()))
    assert part.nll_nats != pytest.approx(whole.nll_nats, rel=1e-6)  # a subset mean, not the whole split's
    other = TestSubset.choose(len(x), TestSubsetConfig(max_images=100, seed=1))[0]
    assert other.indices_sha1 != subset.indices_sha1
    with pytest.raises(ValueError, match="max_images"):
        TestSubsetConfig(max_images=-1).validate()


def test_histogram_and_uniform_baselines_by_counting(digits):
    """The per-pixel histogram baseline against a count done here in numpy; the uniform one is D ln L."""
    train, test = digits.train.x.flatten(1).numpy(), digits.test.x[:50]
    L = digits.info.num_levels
    expected = 0.0
    for img in test.flatten(1).numpy():
        for d, v in enumerate(img):
            expected -= math.log(((train[:, d] == v).sum() + 1) / (len(train) + L))
    got = -histogram_log_prob(digits.train.x, test, L).mean()
    assert float(got) == pytest.approx(expected / len(test), rel=1e-10)
    out = evaluate_likelihood(make_ctx(_PixelSum(), digits), LikelihoodConfig())
    assert out.uniform_nll_nats == pytest.approx(digits.info.num_dims * math.log(L))
    assert out.histogram_nll_nats < out.uniform_nll_nats  # the histogram has learnt something
