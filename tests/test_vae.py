"""The VAE and hierarchical VAE bounds against analytic answers.

* Linear-Gaussian models (probabilistic PCA; its two-layer version for the HVAE) have a closed-form marginal
  N(x | b, C). The real ``log_prob_iwae`` / ``log_prob`` code paths are driven with linear networks and a Gaussian
  decoder swapped in: with the exact posterior as proposal every importance weight equals p(x), so IWAE-k is
  log p(x) for every k; with a mismatched proposal IWAE-k converges to it within its standard error.
* On trained models: E[IWAE-1] = E[ELBO] (the analytic KL terms agree with the Monte Carlo log-densities), and
  the bound grows with k (1, 10, 100).
* On a tiny enumerable space (1×2×2 images, 3 levels: 81 images) the bounds, exponentiated and summed over every
  image, stay ≤ 1 and approach 1 as k grows, because the decoders are normalised over the levels.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import small_info
from torch import nn

from dgmbench.distributions import log_normal_diag
from dgmbench.models import get_model

MODELS = ["vae", "hvae"]
TINY = {"vae": {"latent_dim": 2, "hidden_dim": 32, "num_layers": 1},
        "hvae": {"z1_dim": 2, "z2_dim": 2, "hidden_dim": 32, "num_layers": 1}}


# ------------------------------------------------------------------------------- linear-Gaussian models
class GaussianDecoder(nn.Module):
    """p(x|z) = N(x | params, σ² I) on the integer levels read as numbers (a density, for the closed-form check)."""

    def __init__(self, log_var: float):
        super().__init__()
        self.log_var = torch.tensor(log_var)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return log_normal_diag(x.flatten(1).float(), params, self.log_var).sum(1)  # (B,)


def linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def affine_in_levels(A: torch.Tensor, a0: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The models see h = to_symmetric(x) = 2x/(L−1) − 1; return (weight, bias) with weight·h + bias = A x + a0."""
    half = (L - 1) / 2.0
    return A * half, A.sum(1) * half + a0


INFO = small_info(shape=(1, 2, 2), num_levels=5)  # D = 4
D, L, SIGMA2 = 4, 5, 0.5


def ppca_parts(M: int):
    """Decoder W (D, M) with orthogonal columns (so the exact posterior is diagonal, as q is), offset b (D,)."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, M, generator=g, dtype=torch.float64))
    s = torch.linspace(2.0, 1.0, M, dtype=torch.float64)
    return Q * s, s, 2.0 + torch.randn(D, generator=g, dtype=torch.float64)


def make_images(n=48):
    return torch.randint(0, L, (n, *INFO.shape), generator=torch.Generator().manual_seed(1))


def ppca_vae(mean_factor: float = 1.0, extra_log_var: float = 0.0):
    """A VAE that is pPCA: z ~ N(0, I_2), x|z ~ N(Wz + b, σ²I); q(z|x) = the exact posterior N(A(x − b), Σ),
    Σ = (I + WᵀW/σ²)⁻¹, A = ΣWᵀ/σ², optionally mismatched (mean scaled, variance inflated). Returns the model
    and the closed-form log p(x) = log N(x | b, WWᵀ + σ²I)."""
    M = 2
    W, s, b = ppca_parts(M)
    var = 1.0 / (1.0 + s**2 / SIGMA2)  # diagonal of Σ
    A = var[:, None] * W.T / SIGMA2  # (M, D)
    w_mu, b_mu = affine_in_levels(mean_factor * A, -mean_factor * A @ b, L)
    model = get_model("vae", INFO, latent_dim=M, hidden_dim=8).eval()
    model.encoder = linear(torch.cat([w_mu, torch.zeros(M, D, dtype=torch.float64)]),
                           torch.cat([b_mu, var.log() + extra_log_var]))
    model.decoder = linear(W, b)
    model.decoder_dist = GaussianDecoder(math.log(SIGMA2))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + SIGMA2 * torch.eye(D, dtype=torch.float64))
    return model, lambda x: marginal.log_prob(x.flatten(1).double())


def linear_hvae(merge: str, q2_extra_log_var: float = 0.0, q1_extra_log_var: float = 0.0):
    """An HVAE that is a two-layer linear-Gaussian model: z2 ~ N(0, 1), z1|z2 ~ N(a z2 + c, diag S),
    x|z1 ~ N(W z1 + b, σ²I), so x ~ N(Wc + b, W(aaᵀ + S)Wᵀ + σ²I). The inference networks are set to the exact
    posterior: q(z2|x) by Gaussian conditioning, and q(z1|z2,x) = p(z1|z2,x), which the ladder merge must produce
    from p(z1|z2) and the bottom-up Gaussian likelihood of z1 (precision merge), or as a shift of the prior
    (residual merge). Optional extra log-variances make the proposal mismatched."""
    M1, M2 = 2, 1
    W, s, b = ppca_parts(M1)
    a = torch.tensor([[0.9], [-0.6]], dtype=torch.float64)  # (M1, M2)
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    S = torch.tensor([0.3, 0.6], dtype=torch.float64)
    cov_z1 = a @ a.T + torch.diag(S)
    mean_x, cov_x = W @ c + b, W @ cov_z1 @ W.T + SIGMA2 * torch.eye(D, dtype=torch.float64)
    model = get_model("hvae", INFO, z1_dim=M1, z2_dim=M2, hidden_dim=8, merge=merge).eval()
    model.up1, model.up2 = nn.Identity(), nn.Identity()  # u1 = u2 = h, the image in [-1, 1]
    # q(z2|x): z2 and x are jointly Gaussian with Cov(z2, x) = aᵀWᵀ.
    K = (a.T @ W.T) @ torch.linalg.inv(cov_x)  # (M2, D)
    var2 = 1.0 - (K @ W @ a).diagonal()
    w2, b2 = affine_in_levels(K, -K @ mean_x, L)
    model.q2_head = linear(torch.cat([w2, torch.zeros(M2, D, dtype=torch.float64)]),
                           torch.cat([b2, var2.log() + q2_extra_log_var]))
    # p(z1|z2) = N(a z2 + c, diag S): the top-down path.
    model.prior1 = linear(torch.cat([a, torch.zeros(M1, M2, dtype=torch.float64)]), torch.cat([c, S.log()]))
    # Bottom-up evidence: the likelihood of z1 is N(z1 | m(x), diag(σ²/s²)), m(x) = diag(1/s²) Wᵀ(x − b).
    A_m = W.T / (s**2)[:, None]  # (M1, D)
    w_m, b_m = affine_in_levels(A_m, -A_m @ b, L)
    lik_var = SIGMA2 / s**2
    if merge == "precision":
        model.q1_head = linear(torch.cat([w_m, torch.zeros(M1, D, dtype=torch.float64)]),
                               torch.cat([b_m, lik_var.log() + q1_extra_log_var]))
    else:  # μ_q = μ_p + Δμ with Δμ = (V/S − 1) μ_p + (V/lik_var) m(x); log σ²_q = log S + log(V/S), V = (1/S + 1/lik_var)⁻¹
        V = 1.0 / (1.0 / S + 1.0 / lik_var)
        w_dmu = torch.cat([(V / lik_var)[:, None] * w_m, torch.diag(V / S - 1.0), torch.zeros(M1, M1, dtype=torch.float64)], 1)
        w_dlv = torch.zeros(M1, D + 2 * M1, dtype=torch.float64)
        model.q1_head = linear(torch.cat([w_dmu, w_dlv]), torch.cat([(V / lik_var) * b_m, (V / S).log() + q1_extra_log_var]))
    model.decoder = linear(W, b)
    model.decoder_dist = GaussianDecoder(math.log(SIGMA2))
    marginal = torch.distributions.MultivariateNormal(mean_x, cov_x)
    return model, lambda x: marginal.log_prob(x.flatten(1).double())


LINEAR_MODELS = {"vae": ppca_vae, "hvae-precision": lambda **kw: linear_hvae("precision", **kw),
                 "hvae-residual": lambda **kw: linear_hvae("residual", **kw)}


@pytest.mark.parametrize("name", LINEAR_MODELS)
def test_linear_gaussian_exact_posterior_gives_exact_likelihood(name):
    """Proposal = exact posterior ⇒ every weight p(x,z)/q(z|x) = p(x): IWAE-k = log p(x) for every k and sample,
    and E[ELBO] = log p(x) (the analytic KL terms and the reconstruction term add up)."""
    torch.manual_seed(0)
    model, log_px = LINEAR_MODELS[name]()
    x = make_images()
    ref = log_px(x)
    with torch.no_grad():
        for k in (1, 7):
            torch.testing.assert_close(model.log_prob_iwae(x, k, chunk=3).double(), ref, atol=2e-4, rtol=1e-5)
        elbo = torch.stack([model.log_prob(x).double() for _ in range(400)])  # (400, B)
    se = elbo.std(0) / math.sqrt(len(elbo))
    assert ((elbo.mean(0) - ref).abs() <= 4 * se + 1e-3).all()


@pytest.mark.parametrize("name", LINEAR_MODELS)
def test_linear_gaussian_iwae_converges_to_closed_form(name):
    """With a mismatched proposal IWAE-1 is far below log p(x) and IWAE-k (k = 4000, chunked) equals the
    closed-form marginal within its standard error over repeats."""
    torch.manual_seed(0)
    if name == "vae":
        model, log_px = ppca_vae(mean_factor=0.6, extra_log_var=math.log(2.0))
    else:
        model, log_px = LINEAR_MODELS[name](q2_extra_log_var=math.log(3.0), q1_extra_log_var=math.log(2.0))
    x = make_images(16)
    ref = float(log_px(x).mean())
    with torch.no_grad():
        iwae1 = torch.stack([model.log_prob_iwae(x, 1).double().mean() for _ in range(200)])
        big = torch.stack([model.log_prob_iwae(x, 4000, chunk=1000).double().mean() for _ in range(5)])
    se1, se = float(iwae1.std() / math.sqrt(len(iwae1))), float(big.std() / math.sqrt(len(big)))
    assert ref - float(iwae1.mean()) > 10 * se1 + 0.05, "the proposal must be mismatched for this test to bite"
    assert abs(float(big.mean()) - ref) <= 3 * se + 2e-3, (float(big.mean()), ref, se)


# ------------------------------------------------------------------------------ trained models on digits
@pytest.fixture(scope="module")
def trained(digits):
    """Each family, briefly trained (200 Adam steps) on 256 digits, so its posterior gap is non-trivial."""
    out = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = get_model(name, digits.info, **({"hidden_dim": 128} if name == "vae" else {"hidden_dim": 128}))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        x = digits.train.x[:256]
        model.train()
        for step in range(200):
            xb = x[torch.randint(0, len(x), (64,))]
            loss, _ = model.loss(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[name] = model.eval()
    return out


@pytest.mark.parametrize("name", MODELS)
def test_iwae_is_above_elbo_and_grows_with_k(name, trained, digits):
    torch.manual_seed(0)
    model = trained[name]
    x = digits.test.x[:64]
    with torch.no_grad():
        elbo = torch.stack([model.log_prob(x) for _ in range(40)]).double().mean(0)  # (B,) ≈ E[ELBO]
        iwae = {k: torch.stack([model.log_prob_iwae(x, k) for _ in range(reps)]).double().mean(0)
                for k, reps in ((1, 40), (10, 8), (100, 4))}

    def diff(a, b):  # mean over images of a − b, and its standard error over images
        d = a - b
        return float(d.mean()), float(d.std() / math.sqrt(len(d)))

    # E[IWAE-1] = E[log p(x,z) − log q(z|x)] = ELBO: the closed-form KLs match the Monte Carlo log-densities.
    m, se = diff(iwae[1], elbo)
    assert abs(m) <= 4 * se + 0.05, (m, se)
    # The bound tightens with k: ELBO ≤ IWAE-10 ≤ IWAE-100, by clear margins on a model with a posterior gap.
    for lo, hi in ((elbo, iwae[10]), (iwae[1], iwae[10]), (iwae[10], iwae[100])):
        m, se = diff(hi, lo)
        assert m > 3 * se and m > 0.05, (m, se)


# --------------------------------------------------------------------------- tiny enumerable image space
def all_images(info) -> torch.Tensor:
    """Every image of the space, (L^D, C, H, W): 3^4 = 81 for 1×2×2 images with 3 levels."""
    grids = torch.meshgrid(*[torch.arange(info.num_levels)] * info.num_dims, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], 1).view(-1, *info.shape)


@pytest.mark.parametrize("name", MODELS)
def test_bounds_normalise_on_an_enumerable_space(name):
    """Σ_x exp(bound(x)) over all 81 images: ≤ 1 for the ELBO, rising to 1 for IWAE-k as k grows."""
    torch.manual_seed(0)
    info = small_info(shape=(1, 2, 2), num_levels=3)
    model = get_model(name, info, **TINY[name])
    # Train briefly on two noisy "prototype" images, so the decoder depends on z and the posterior is not trivial.
    protos = torch.tensor([[0, 2, 2, 0], [2, 0, 1, 2]])
    data = protos[torch.randint(0, 2, (512,))]
    flip = torch.rand(data.shape) < 0.15
    data = torch.where(flip, torch.randint(0, 3, data.shape), data).view(-1, *info.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss, _ = model.loss(data[torch.randint(0, len(data), (64,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = all_images(info)
    with torch.no_grad():
        # exp of the expected bound: average the bound over draws, exponentiate, sum over the space
        elbo_sum = float(torch.stack([model.log_prob(x) for _ in range(400)]).double().mean(0).exp().sum())
        sums = {k: float(torch.stack([model.log_prob_iwae(x, k, chunk=1024) for _ in range(reps)]).double().mean(0).exp().sum())
                for k, reps in ((1, 400), (16, 64), (256, 8), (4096, 4))}
    print(f"{name}: Σ exp(ELBO) = {elbo_sum:.4f}, Σ exp(IWAE-k) = {sums}")
    assert elbo_sum <= 1.0 + 2e-3, elbo_sum
    assert abs(sums[1] - elbo_sum) <= 0.06  # IWAE-1 is the ELBO in expectation (both averaged over 400 draws)
    assert sums[1] < sums[16] < sums[256] <= sums[4096] + 1e-3, sums
    assert abs(sums[4096] - 1.0) <= 0.05 and sums[4096] <= 1.0 + 5e-3, sums
    assert 1.0 - sums[1] > 2 * abs(1.0 - sums[4096]), f"the gap must shrink with k: {sums}"
