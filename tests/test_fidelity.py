"""Sample-quality metrics against closed forms: Fréchet distance of Gaussians, k-NN precision/recall on sets with
known overlap, and the classifier cache (trained once, reused, retrained when its spec changes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgmbench.metrics.fidelity import (
    SampleQualityConfig,
    frechet_distance,
    frechet_distance_from_stats,
    inception_fid_status,
    knn_radii,
    load_or_train_classifier,
    precision_recall,
)


def test_frechet_diagonal_closed_form():
    """Diagonal covariances: FD = ‖μ1 − μ2‖² + Σ_i (σ1_i − σ2_i)²."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_commuting_full_covariances():
    """Σ1 = R D1 Rᵀ, Σ2 = R D2 Rᵀ commute, so Tr (Σ1Σ2)^{1/2} = Σ √(d1 d2) and FD = Σ (√d1 − √d2)² (+ means)."""
    rng = np.random.default_rng(1)
    R, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    d1, d2 = rng.uniform(0.1, 3.0, 4), rng.uniform(0.1, 3.0, 4)
    mu = rng.normal(size=4)
    fd = frechet_distance_from_stats(mu, R @ np.diag(d1) @ R.T, np.zeros(4), R @ np.diag(d2) @ R.T)
    assert fd == pytest.approx(mu @ mu + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum(), rel=1e-7)


def test_frechet_from_samples():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)  # the same sample
    assert frechet_distance(a, b) == pytest.approx(1.0 + 1.0 + 0.25, rel=0.05)  # 1² + (2−1)² + (0.5−1)²


def test_precision_recall_identical_and_disjoint():
    torch.manual_seed(0)
    real = torch.randn(300, 8)
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    p, r = precision_recall(real, torch.randn(300, 8), k=3)  # another sample of the same distribution
    assert p > 0.8 and r > 0.8
    assert precision_recall(real, torch.randn(300, 8) + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_partial_overlap_closed_form():
    """Real = integers 0..99, fake = 50..149 on a line, k = 1: every radius is 1, so a fake is covered iff it is
    ≤ 100 (51 of 100) and a real is covered iff it is ≥ 49 (51 of 100)."""
    real = torch.arange(0, 100, dtype=torch.float64)[:, None]
    fake = torch.arange(50, 150, dtype=torch.float64)[:, None]
    assert torch.equal(knn_radii(real, 1), torch.ones(100, dtype=torch.float64))
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(0.51) and r == pytest.approx(0.51)
    # fakes that cover only half the real support: precision 1, recall ≈ 1/2
    p, r = precision_recall(real, real[:50].clone(), k=1)
    assert p == 1.0 and r == pytest.approx(0.51)


def test_classifier_cached_once(tmp_path, digits):
    cfg = SampleQualityConfig(cache_dir=str(tmp_path), classifier_steps=200, classifier_width=8, feature_dim=16)
    net, rec = load_or_train_classifier(digits, cfg)
    path = tmp_path / "digits" / "classifier.pt"
    assert path.exists() and 0.0 <= rec["test_accuracy"] <= 1.0
    assert rec["test_accuracy"] > 0.3  # 200 steps already beat chance (0.1) by far
    mtime = path.stat().st_mtime_ns
    net2, rec2 = load_or_train_classifier(digits, cfg)  # cached: not retrained
    assert path.stat().st_mtime_ns == mtime and rec2["test_accuracy"] == rec["test_accuracy"]
    x = digits.test.x[:32]
    from dgmbench.distributions import to_symmetric

    with torch.no_grad():
        torch.testing.assert_close(net.features(to_symmetric(x, 17)), net2.features(to_symmetric(x, 17)))
    # deterministic: a fresh training with the same seed gives the same accuracy
    other = SampleQualityConfig(cache_dir=str(tmp_path / "b"), classifier_steps=200, classifier_width=8, feature_dim=16)
    assert load_or_train_classifier(digits, other)[1]["test_accuracy"] == rec["test_accuracy"]
    # a changed spec retrains
    load_or_train_classifier(digits, SampleQualityConfig(cache_dir=str(tmp_path), classifier_steps=201,
                                                         classifier_width=8, feature_dim=16))
    assert path.stat().st_mtime_ns != mtime


def test_inception_fid_is_optional():
    cfg = SampleQualityConfig()
    assert "disabled" in inception_fid_status(cfg, (1, 8, 8))
    assert "28×28" in inception_fid_status(SampleQualityConfig(inception_fid=True), (1, 8, 8))
