"""Flow: every transform (and the whole flow) is invertible with the log-determinant autograd computes; the
dequantised bound is on the discrete scale (sums to ≤ 1 over an enumerable space, and its integral matches the
probability mass that sampling puts inside the data cube)."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import small_info
from dgmbench.models import get_model
from dgmbench.models import flow as fl


pytestmark = pytest.mark.usefixtures("float64")  # conftest: float64 default dtype for every test here


def perturb(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its initial value: couplings start as the identity, whose log-det (0) would
    agree with any formula."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module.eval()


def autograd_logdet(transform, x: torch.Tensor, context=None) -> torch.Tensor:
    """(B,) log|det ∂f(x_b)/∂x_b| from the full Jacobian of each sample."""
    out = []
    for b in range(x.shape[0]):
        ctx = None if context is None else context[b : b + 1]
        f = lambda xi: transform(xi.view(1, *x.shape[1:]), ctx)[0].flatten()  # noqa: E731
        out.append(torch.linalg.slogdet(torch.autograd.functional.jacobian(f, x[b].flatten()))[1])
    return torch.stack(out)


def assert_invertible_with_logdet(transform, x, context=None):
    y, logdet = transform(x, context)
    x_back, inv_logdet = transform.inverse(y, context)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inv_logdet, -logdet, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(logdet, autograd_logdet(transform, x, context), atol=1e-9, rtol=1e-9)


TRANSFORMS = {
    "logit": lambda: fl.Logit(0.05),
    "sigmoid": lambda: fl.InverseTransform(fl.Logit(0.0)),
    "actnorm": lambda: fl.ActNorm(2),
    "invconv1x1": lambda: fl.InvConv1x1(2),
    "squeeze": lambda: fl.Squeeze(),
    "checkerboard-even": lambda: fl.AffineCoupling(2, 8, "checkerboard", 0),
    "checkerboard-odd": lambda: fl.AffineCoupling(2, 8, "checkerboard", 1),
    "channel": lambda: fl.AffineCoupling(2, 8, "channel", 0),
    "channel-flipped-odd": lambda: fl.AffineCoupling(3, 8, "channel", 1),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_inverse_and_logdet(name):
    t = perturb(TRANSFORMS[name]())
    C = 3 if name == "channel-flipped-odd" else 2
    x = torch.rand(3, C, 2, 2) * 0.9 + 0.05  # in (0, 1), valid for the logit too
    if name == "sigmoid":
        x = torch.randn(3, C, 2, 2) * 2
    assert_invertible_with_logdet(t, x)


def test_conditional_coupling_inverse_and_logdet():
    t = perturb(fl.AffineCoupling(2, 8, "checkerboard", 0, context_channels=3))
    assert_invertible_with_logdet(t, torch.randn(3, 2, 2, 2), context=torch.randn(3, 3, 2, 2))


def test_invconv_logdet_is_log_abs_det_of_weight():
    t = perturb(fl.InvConv1x1(4))
    torch.testing.assert_close(t.log_s.sum(), torch.linalg.slogdet(t.weight())[1])


def test_actnorm_data_dependent_init():
    t = fl.ActNorm(3).train()
    x = torch.randn(64, 3, 4, 4) * torch.tensor([0.5, 2.0, 7.0])[None, :, None, None] + 3.0
    y, _ = t(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    assert bool(t.initialized)


@pytest.mark.parametrize("shape,scales", [((1, 2, 2), 1), ((2, 2, 2), 1), ((1, 4, 4), 2)])
def test_whole_flow_inverse_and_logdet(shape, scales):
    model = perturb(get_model("flow", small_info(shape, 3), hidden_channels=8, num_scales=scales,
                              checkerboard_steps=2, steps_per_scale=2), scale=0.1)
    assert_invertible_with_logdet(model.transform, torch.rand(2, *shape) * 0.9 + 0.05)


def test_variational_dequantizer_log_q():
    """log q(u|x) = log N(ε) − log|det ∂u/∂ε|, with the log-det checked against autograd."""
    model = perturb(get_model("flow", small_info((1, 2, 2), 3), dequantization="variational", dequant_hidden=8))
    dq = model.dequantizer
    x = torch.tensor([[[[0, 1], [2, 1]]], [[[2, 2], [0, 0]]]])
    context = dq.context_net(x.double() - 1.0)  # to_symmetric for L = 3
    eps = torch.randn(2, 1, 2, 2)
    assert_invertible_with_logdet(dq.transform, eps, context)
    u, _ = dq.transform(eps, context)
    assert torch.all((u > 0) & (u < 1))
    assert model.estimator == "variational dequantised bound"


def all_images(shape, num_levels):
    D = shape[0] * shape[1] * shape[2]
    return torch.tensor(list(itertools.product(range(num_levels), repeat=D))).view(-1, *shape)


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_bound_sums_to_at_most_one(dequantization):
    """Σ_x exp(E_q[bound(x)]) ≤ Σ_x P(x) ≤ 1 over all 81 images of 1×2×2 with 3 levels (Jensen), and it is not
    vanishingly small, so the D·log L scale term is right (a density on [0, L) would give ≈ 1/L^D per image)."""
    torch.set_default_dtype(torch.float32)  # a statistical check; float64 convolutions are slow
    model = perturb(get_model("flow", small_info((1, 2, 2), 3), hidden_channels=8, dequantization=dequantization), 0.05)
    x = all_images((1, 2, 2), 3)
    torch.manual_seed(1)
    with torch.no_grad():
        bound = model.log_prob(x.repeat(400, 1, 1, 1)).view(400, -1).mean(0)  # E_q[...] per image, 400 draws
    total = float(bound.exp().sum())
    assert 0.2 < total <= 1.0, total


def test_discrete_mass_matches_samples_inside_the_cube():
    """For uniform q, E_u[exp(log p_V((x+u)/L) − D log L)] = P(x) exactly, so Σ_x of it is the flow's mass inside
    [0,1)^D — the probability that a sample z ~ N(0, I) maps back inside the cube. Two estimates, one number."""
    torch.set_default_dtype(torch.float32)
    model = perturb(get_model("flow", small_info((1, 2, 2), 3), hidden_channels=8), 0.1)
    x = all_images((1, 2, 2), 3)
    torch.manual_seed(2)
    with torch.no_grad():
        mass = model.log_prob(x.repeat(2000, 1, 1, 1)).exp().view(2000, -1).mean(0).sum()
        v, _ = model.transform.inverse(torch.randn(100_000, *model.latent_shape))
        inside = ((v >= 0) & (v < 1)).flatten(1).all(1).double().mean()
    assert 0.05 < float(inside) < 0.999  # the check is only informative if some mass lies outside
    assert abs(float(mass) - float(inside)) < 0.03 * float(inside) + 0.005, (float(mass), float(inside))


def test_samples_are_levels_and_embedding_is_the_latent(digits):
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    model = get_model("flow", digits.info).eval()
    s = model.sample(32)
    assert s.dtype == torch.long and s.min() >= 0 and s.max() < digits.info.num_levels
    x = digits.test.x[:4]
    z = model.embed(x)
    assert z.shape == (4, digits.info.num_dims)
    v_back, _ = model.transform.inverse(z.view(4, *model.latent_shape))
    torch.testing.assert_close(v_back, (x.float() + 0.5) / digits.info.num_levels, atol=1e-4, rtol=0)


def test_rejects_unsqueezable_shapes():
    with pytest.raises(ValueError, match="num_scales"):
        get_model("flow", small_info((1, 6, 6), 3), num_scales=2)
