"""ARM (gated PixelCNN): causality without a blind spot, exact normalisation on an enumerable space, the sampler
drawing from the model's own distribution, and the cached sampler reproducing the naive one."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import small_info
from dgmbench.models import get_model


def tiny_arm(shape, num_levels=3, **over):
    torch.manual_seed(0)
    cfg = {"hidden_channels": 24, "head_channels": 24, "num_layers": 3, **over}
    return get_model("arm", small_info(shape, num_levels), **cfg).double().eval()


def all_images(shape, num_levels):
    """Every image of the given shape: (L^D, C, H, W)."""
    D = shape[0] * shape[1] * shape[2]
    return torch.tensor(list(itertools.product(range(num_levels), repeat=D))).view(-1, *shape)


@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 3, 3)])
def test_causal_and_no_blind_spot(shape):
    """∂ logits_d / ∂ x_e is exactly 0 for every e ≥ d (raster order, channels within a pixel), and non-zero for
    every earlier e: on these small images the receptive field covers all of x_<d, including the pixels above
    and to the right that a single masked-conv stack misses (the blind spot)."""
    model = tiny_arm(shape)
    C, H, W = shape
    order = [(c, h, w) for h in range(H) for w in range(W) for c in range(C)]  # the model's ordering
    xf = (torch.rand(8, *shape, dtype=torch.double) * 2 - 1).requires_grad_()
    for d, (c, h, w) in enumerate(order):
        xf.grad = None
        model.logits_from_float(xf)[:, :, c, h, w].sum().backward()
        influence = xf.grad.abs().sum(0)  # (C, H, W), summed over a batch of random inputs
        later = torch.stack([influence[e] for e in order[d:]])
        assert torch.all(later == 0), f"position {(c, h, w)} sees a later position"
        if d:
            earlier = torch.stack([influence[e] for e in order[:d]])
            assert torch.all(earlier > 0), f"position {(c, h, w)} is blind to {order[int(torch.argmin(earlier))]}"


def test_conditional_logits_match_log_prob(digits):
    """log p(x) = Σ_d log softmax(conditional_logits)_d[x_d] (the chain rule the coder relies on)."""
    torch.manual_seed(0)
    model = get_model("arm", digits.info).eval()
    x = digits.test.x[:4]
    with torch.no_grad():
        logits = model.conditional_logits(x)  # (B, L, C, H, W)
        by_hand = logits.log_softmax(1).gather(1, x.long()[:, None]).flatten(1).sum(1)
        torch.testing.assert_close(model.log_prob(x), by_hand)
    assert logits.shape == (4, digits.info.num_levels, *digits.info.shape)


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 1, 2)])
def test_normalises_on_enumerable_space(shape):
    """Σ_x p(x) = 1 over all 3^4 = 81 images (one channel, and two channels with channel masking)."""
    model = tiny_arm(shape)
    with torch.no_grad():
        total = model.log_prob(all_images(shape, 3)).exp().sum()
    assert abs(float(total) - 1.0) < 1e-5


def test_samples_follow_the_model():
    """Empirical frequencies of 20,000 samples match p(x) on the 81 images (χ² statistic near its 80 d.o.f.)."""
    shape, n = (1, 2, 2), 20_000
    model = tiny_arm(shape)
    images = all_images(shape, 3)
    with torch.no_grad():
        p = model.log_prob(images).exp()
        torch.manual_seed(1)
        s = model.sample(n)
    index = (s.flatten(1) * torch.tensor([27, 9, 3, 1])).sum(1)  # base-3 code = row of all_images
    counts = torch.bincount(index, minlength=81).double()
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 80 + 6 * (2 * 80) ** 0.5, chi2  # mean 80, sd √160: six sd is far beyond chance


@pytest.mark.parametrize("shape,num_levels", [((1, 8, 8), 17), ((2, 3, 3), 5)])
def test_cached_sampler_equals_naive(shape, num_levels):
    """Same weights and seed ⇒ the cached sampler returns exactly the images of the full recomputation."""
    torch.manual_seed(0)
    model = get_model("arm", small_info(shape, num_levels), hidden_channels=16, head_channels=16).eval()
    with torch.no_grad():  # default init gives near-flat conditionals; larger weights make every input matter
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    torch.manual_seed(3)
    fast = model.sample(16)
    torch.manual_seed(3)
    naive = model.sample_naive(16)
    assert torch.equal(fast, naive)
    assert len(torch.unique(fast)) > 1
    assert model.sampling_passes == shape[0] * shape[1] * shape[2]


def test_rejects_too_few_hidden_channels():
    with pytest.raises(ValueError, match="hidden_channels"):
        get_model("arm", small_info((3, 2, 2), 3), hidden_channels=2, head_channels=8)
