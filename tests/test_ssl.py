"""Self-supervised encoders: the losses and corruptions as pure functions, and PCA against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dgmbench.models import get_model
from dgmbench.models.dae import bernoulli_mask, gaussian_noise, mask_with_indicator
from dgmbench.models.masked import patch_mask
from dgmbench.models.pca import PCA
from dgmbench.models.simclr import Augment, nt_xent


# ---------------------------------------------------------------------------------------------- NT-Xent
def test_nt_xent_matches_hand_computation():
    """2 images → 4 views; ℓ_i = −log(exp(s_ip/τ) / Σ_{j≠i} exp(s_ij/τ)), averaged, written out by hand."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 4.0], [-1.0, 1.0]])
    tau = 0.5
    views = [v / v.norm() for v in (z1[0], z1[1], z2[0], z2[1])]  # order: a, b, a', b'
    cos = lambda i, j: float(views[i] @ views[j])  # noqa: E731
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    losses = []
    for i in range(4):
        num = math.exp(cos(i, positive[i]) / tau)
        den = sum(math.exp(cos(i, j) / tau) for j in range(4) if j != i)
        losses.append(-math.log(num / den))
    assert nt_xent(z1, z2, tau).item() == pytest.approx(sum(losses) / 4, rel=1e-6)


def test_nt_xent_closed_form_for_orthogonal_identical_views():
    """Identical views of N orthogonal images: ℓ = −log(e^{1/τ} / (e^{1/τ} + 2N − 2)) for every view."""
    n, tau = 5, 0.2
    z = torch.eye(n) * 3.0  # norms do not matter: the loss uses cosine similarity
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)
    # Swapping the pairing (views of different images as "positives") must cost more.
    assert nt_xent(z, z.roll(1, 0), tau).item() > expected + 1.0


def test_nt_xent_symmetric_in_the_two_views():
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    torch.testing.assert_close(nt_xent(z1, z2, 0.3), nt_xent(z2, z1, 0.3))


# ------------------------------------------------------------------------------------------ corruptions
def test_gaussian_noise_statistics():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 16, 16)
    eps = gaussian_noise(x, 0.3) - x  # 51,200 draws: s.e. of the mean ≈ 0.0013, of the sd ≈ 0.001
    assert abs(eps.mean().item()) < 0.006
    assert eps.std().item() == pytest.approx(0.3, abs=0.005)


def test_bernoulli_mask_keeps_a_fraction_and_leaves_values_untouched():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 16, 16) + 0.1  # nonzero, so a dropped value is visible as 0
    p = 0.3
    xm, m = bernoulli_mask(x, p)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert m.mean().item() == pytest.approx(1 - p, abs=0.01)  # s.e. ≈ 0.002
    assert torch.equal(xm[m == 1], x[m == 1])  # kept values exactly as they were
    assert (xm[m == 0] == 0).all()


def test_mask_with_indicator_doubles_channels_and_carries_the_mask():
    torch.manual_seed(0)
    x = torch.rand(50, 3, 6, 6) + 0.1
    out = mask_with_indicator(x, 0.5)
    assert out.shape == (50, 6, 6, 6)
    xm, m = out[:, :3], out[:, 3:]
    assert set(m.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(xm, m * x)  # the image channels are m ⊙ x with the very mask that is carried


def test_dae_mask_input_encoder_sees_twice_the_channels(digits):
    model = get_model("dae", digits.info, corruption="mask_input")
    assert model.encoder.conv[0].in_channels == 2 * digits.info.shape[0]
    assert model.corrupt(torch.rand(4, *digits.info.shape)).shape == (4, 2, 8, 8)
    plain = get_model("dae", digits.info, corruption="gaussian")
    assert plain.encoder.conv[0].in_channels == digits.info.shape[0]


def test_dae_categorical_loss_is_exact_with_a_perfect_decoder(digits):
    """A decoder that puts all its mass on the clean levels gives a reconstruction loss of ≈ 0 nats."""
    model = get_model("dae", digits.info, corruption="mask")
    x = digits.test.x[:1].long()
    L = digits.info.num_levels
    target = torch.nn.functional.one_hot(x.reshape(-1), L).T.reshape(1, -1).float() * 50.0  # (1, L·D) logits
    last = model.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(target[0])
    u = torch.zeros(1, *digits.info.shape)
    assert model.reconstruction_nll(x, u).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ masked model
def test_patch_mask_hides_whole_patches_in_the_stated_number():
    torch.manual_seed(0)
    m = patch_mask(100, 8, 8, 2, 0.25)
    assert m.shape == (100, 1, 8, 8)
    patches = m.view(100, 4, 2, 4, 2)  # (B, ph, 2, pw, 2)
    assert (patches.amin((2, 4)) == patches.amax((2, 4))).all()  # constant within each patch
    assert ((1 - patches[:, :, 0, :, 0]).sum((1, 2)) == 4).all()  # round(0.25 · 16) hidden per image
    # Every patch is hidden equally often (uniform choice): 100 · 4 / 16 = 25 per patch on average.
    assert (1 - patches[:, :, 0, :, 0]).sum(0).float().mean().item() == pytest.approx(25.0)
    # A side that is not a multiple of the patch is cropped, and still masks the right count.
    assert patch_mask(3, 7, 5, 2, 0.5).shape == (3, 1, 7, 5)


def test_masked_loss_counts_only_hidden_pixels(digits):
    torch.manual_seed(0)
    model = get_model("masked", digits.info)
    x = digits.test.x[:4].long()
    assert torch.equal(model.masked_nll(x, torch.ones(4, 1, 8, 8)), torch.zeros(4))  # nothing hidden, no loss
    m = patch_mask(4, 8, 8, 2, 0.5)
    per_pixel = model.masked_nll(x, m)
    assert (per_pixel > 0).all()


# ------------------------------------------------------------------------------------------- SimCLR views
def test_augment_without_randomness_is_the_identity():
    torch.manual_seed(0)
    u = torch.rand(6, 1, 8, 8)
    identity = Augment(max_rotation=0.0, min_scale=1.0, max_shift=0.0, noise_std=0.0, erase_prob=0.0)
    torch.testing.assert_close(identity(u), u, atol=1e-6, rtol=0)
    views = Augment()(u)
    assert views.shape == u.shape and not torch.allclose(views, u)


def test_simclr_embeds_before_the_projection_head(digits):
    model = get_model("simclr", digits.info, feature_dim=32, projection_dim=16).eval()
    with torch.no_grad():
        assert model.embed(digits.test.x[:3]).shape == (3, 32)


# ------------------------------------------------------------------------------------------------- PCA
def _fit_pca(digits, k: int, batch_size: int) -> PCA:
    model = get_model("pca", digits.info, num_components=k)
    x = digits.train.x
    for i in range(0, len(x), batch_size):
        model.train_step(x[i : i + batch_size], model.configure_optimizers(None), None)
    return model


def test_pca_matches_sklearn(digits):
    from sklearn.decomposition import PCA as SkPCA

    from dgmbench.distributions import to_symmetric

    k = 10
    model = _fit_pca(digits, k, batch_size=128)  # moments streamed over 8 batches
    h = to_symmetric(digits.train.x, digits.info.num_levels).flatten(1).double().numpy()
    ref = SkPCA(n_components=k, svd_solver="full").fit(h)
    np.testing.assert_allclose(model.explained_variance.numpy(), ref.explained_variance_, rtol=1e-6)
    W = model.components.double().numpy()  # (D, k)
    np.testing.assert_allclose(W @ W.T, ref.components_.T @ ref.components_, atol=1e-5)  # same subspace
    z = model.embed(digits.test.x).double().numpy()
    z_ref = ref.transform(to_symmetric(digits.test.x, digits.info.num_levels).flatten(1).double().numpy())
    signs = np.sign((z * z_ref).sum(0))  # eigenvectors are defined up to sign
    np.testing.assert_allclose(z, z_ref * signs, atol=1e-4)
    # The squared reconstruction error left is the sum of the discarded eigenvalues (training data, ddof=1).
    full = SkPCA(svd_solver="full").fit(h)
    n = len(h)
    err = model.loss(digits.train.x)[0].item()
    assert err == pytest.approx(full.explained_variance_[k:].sum() * (n - 1) / n, rel=1e-4)


def test_pca_does_not_depend_on_the_batching(digits):
    a, b = _fit_pca(digits, 8, batch_size=1000), _fit_pca(digits, 8, batch_size=37)
    torch.testing.assert_close(a.components, b.components, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.explained_variance, b.explained_variance)
    assert PCA.closed_form and PCA.train_defaults["max_epochs"] == 1
