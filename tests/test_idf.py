"""Discrete flow (idf): the couplings are a bijection of the integer images, the likelihood sums to exactly one over
an enumerable space, the prior's groups are causal, the batched training likelihood equals the coder's per-group
tables, and the ANS code of an image costs −log₂ P(x) bits (plus a few words) and decodes bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import small_info
from dgmbench.metrics.compression import code_discrete_latent, encode_discrete_latent
from dgmbench.metrics.normalisation import enumerate_images, total_probability
from dgmbench.models import get_model
from dgmbench.models.discrete_flow import multiscale_groups


pytestmark = pytest.mark.usefixtures("float64")  # conftest: float64 default dtype for every test here


def random_idf(shape=(1, 2, 2), num_levels=3, couplings=3, seed=0):
    """An idf whose couplings really shift (a fresh one starts as the identity, which any test would pass)."""
    torch.manual_seed(seed)
    model = get_model("idf", small_info(shape, num_levels), couplings=couplings, hidden_channels=8, prior_hidden=8,
                      prior_components=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for c in model.couplings:
            c.net[-1].bias.mul_(2 * num_levels)  # shifts of several levels, so wrap-arounds happen
    return model.eval()


@pytest.mark.parametrize("H, W, expected", [(8, 8, 7), (28, 28, 11), (2, 2, 3), (1, 1, 1), (5, 3, None)])
def test_groups_partition_the_image_coarse_to_fine(H, W, expected):
    groups = multiscale_groups(H, W)
    assert torch.equal(torch.stack(groups).sum(0), torch.ones(H, W, dtype=torch.long))  # each pixel once
    assert groups[0][0, 0] and groups[0].sum() == 1
    if expected is not None:
        assert len(groups) == expected
    if (H, W) == (8, 8):
        assert [int(g.sum()) for g in groups] == [1, 1, 2, 4, 8, 16, 32]  # each stride's centres, then the rest


@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 3), ((1, 3, 3), 3), ((2, 2, 2), 2)])
def test_couplings_permute_the_enumerable_space(shape, levels):
    model = random_idf(shape, levels)
    x = enumerate_images(shape, levels)
    z = model.to_latent(x)
    assert (z != x).any(), "the perturbed couplings should move some images"
    assert z.min() >= 0 and z.max() < levels
    assert len(torch.unique(z.flatten(1), dim=0)) == len(x)  # injective on a finite set = a permutation
    assert torch.equal(model.from_latent(z), x)


@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 3), ((1, 2, 3), 4), ((2, 2, 2), 2)])
def test_likelihood_sums_to_one_over_every_image(shape, levels):
    res = total_probability(random_idf(shape, levels))
    assert res["num_images"] == levels ** math.prod(shape)
    assert res["sum_p"] == pytest.approx(1.0, abs=1e-10)


def test_training_likelihood_equals_the_coders_tables():
    """log_prob (all groups in one batched pass) = Σ_g log P(z_g | z_<g) read from latent_log_pmf (the coder's)."""
    model = random_idf((1, 4, 4), 5)
    x = torch.randint(0, 5, (6, 1, 4, 4))
    z = model.to_latent(x)
    total = torch.zeros(6)
    for g, group in enumerate(model.latent_groups):
        lp = model.latent_log_pmf(z, g)  # (B, L, C, H, W)
        picked = lp.gather(1, z.unsqueeze(1)).squeeze(1)  # (B, C, H, W)
        total += (picked * group).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), total, atol=1e-10, rtol=1e-10)


def test_each_groups_tables_read_only_earlier_groups():
    model = random_idf((1, 4, 4), 5)
    torch.manual_seed(1)
    z = torch.randint(0, 5, (4, 1, 4, 4))
    groups = model.latent_groups
    for g, group in enumerate(groups):
        later = torch.stack(groups[g:]).any(0)  # this group and every later one
        z2 = torch.where(later, torch.randint(0, 5, z.shape), z)
        assert torch.equal(model.latent_log_pmf(z, g)[:, :, group], model.latent_log_pmf(z2, g)[:, :, group])


def test_gradient_reaches_the_couplings_through_the_rounding():
    model = random_idf((1, 4, 4), 5).train()
    loss, _ = model.loss(torch.randint(0, 5, (8, 1, 4, 4)))
    loss.backward()
    assert all(c.net[0].weight.grad.abs().sum() > 0 for c in model.couplings)


def test_ans_code_costs_minus_log2_p_and_decodes_bit_exactly():
    model = random_idf((1, 4, 4), 5)
    torch.manual_seed(2)
    x = torch.randint(0, 5, (40, 1, 4, 4))
    stream, ideal = encode_discrete_latent(model, x)
    exact_bits = float(-model.log_prob(x).detach().sum()) / math.log(2)
    assert ideal == pytest.approx(exact_bits, rel=1e-9)  # the tables are the model's probabilities
    # constriction quantises each table to 24-bit precision: a small relative cost, plus at most a few words
    assert exact_bits <= 32 * len(stream) <= 1.01 * exact_bits + 64
    res = code_discrete_latent(model, x, batch_size=16, verify_images=0)  # three streams, the last one short
    assert res["round_trip_exact"] and res["verified_images"] == 40
    res = code_discrete_latent(model, x, batch_size=16, verify_images=20)  # partial verification of stream 2
    assert res["round_trip_exact"] and res["verified_images"] == 20


def test_a_corrupted_stream_does_not_decode_to_the_images():
    from dgmbench.metrics.compression import decode_discrete_latent

    model = random_idf((1, 4, 4), 5)
    x = torch.randint(0, 5, (8, 1, 4, 4))
    stream, _ = encode_discrete_latent(model, x)
    stream = stream.copy()
    stream[-1] ^= 0x5A5A5A5A  # the first words to pop
    decoded, _ = decode_discrete_latent(model, stream, 8)
    assert not torch.equal(decoded, x)


def test_samples_are_valid_images_and_follow_the_prior():
    """On a 1×1×1 space with the couplings shifting by a known amount, the sample frequencies match P(x)."""
    model = random_idf((1, 1, 1), 4, couplings=1)
    x = enumerate_images((1, 1, 1), 4)
    p = model.log_prob(x).exp()
    torch.manual_seed(3)
    s = model.sample(20000)
    freq = torch.bincount(s.flatten(), minlength=4).double() / len(s)
    torch.testing.assert_close(freq, p, atol=0.015, rtol=0)


@pytest.mark.parametrize("size, dilation", [(8, 8), (4, 4), (5, 8)])
def test_a_dilation_that_reaches_past_the_image_is_its_centre_tap(size, dilation):
    """The prior's residual block skips the taps that only ever see zero padding; the full convolution is the
    reference, for the output and for every gradient (the skipped taps' gradient is exactly zero in it)."""
    from dgmbench.models.discrete_flow import _Residual

    torch.manual_seed(0)
    block = _Residual(3, dilation).double()
    h = torch.randn(2, 3, size, size, dtype=torch.double, requires_grad=True)
    out = block(h)
    full = h + torch.relu(block.conv._conv_forward(h, block.conv.weight, block.conv.bias))  # every tap
    assert torch.allclose(out, full, rtol=0, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (h, block.conv.weight, block.conv.bias), g)
    ref = torch.autograd.grad(full, (h, block.conv.weight, block.conv.bias), g)
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert torch.count_nonzero(ref[1][:, :, [0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]]) == 0
