"""The training-curve noise measure on synthetic curves with known noise (metrics/stability.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dgmbench.metrics.stability import MIN_NOISE_EPOCHS, curve_noise


def noisy(trend, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return list(np.asarray(trend) + sigma * rng.standard_normal(len(trend)))


T = 200
t = np.arange(T)
LEVEL = 2.0


def test_smooth_curves_score_zero():
    assert curve_noise(LEVEL + 3 * np.exp(-t / 10)) == pytest.approx(0.0, abs=1e-4)  # a decaying loss
    assert curve_noise(LEVEL - 0.001 * t) == pytest.approx(0.0, abs=1e-12)  # a straight line
    assert curve_noise([LEVEL] * T) == 0.0  # flat


def test_white_noise_is_measured_as_its_relative_sd():
    """For white noise of sd σ on a level ℓ the measure estimates σ / ℓ (the second difference has sd √6 σ)."""
    for sigma in (0.01, 0.05, 0.2):
        est = np.mean([curve_noise(noisy([LEVEL] * T, sigma, seed)) for seed in range(20)])
        assert est == pytest.approx(sigma / LEVEL, rel=0.05)


def test_equal_noise_on_a_decaying_and_a_flat_curve_scores_equally():
    """The defect of the old range-normalised roughness: here both curves settle at the same level in their
    second half, so the same noise must score the same."""
    sigma = 0.02
    decaying = [curve_noise(noisy(LEVEL + 5 * np.exp(-t / 8), sigma, s)) for s in range(20)]
    flat = [curve_noise(noisy([LEVEL] * T, sigma, s)) for s in range(20)]
    assert np.mean(decaying) == pytest.approx(np.mean(flat), rel=0.05)


def test_scale_free_and_short_curves():
    curve = noisy([LEVEL] * 50, 0.1)
    assert curve_noise([10 * v for v in curve]) == pytest.approx(curve_noise(curve))  # units do not matter
    assert math.isnan(curve_noise([1.0] * (2 * MIN_NOISE_EPOCHS - 2)))  # second half too short
    assert not math.isnan(curve_noise([1.0] * (2 * MIN_NOISE_EPOCHS - 1)))
    assert math.isnan(curve_noise([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0]))  # not finite


def test_a_zigzag_scores_far_above_a_settled_minimisation():
    zigzag = [1.0, 0.2] * 10
    assert curve_noise(zigzag) > 0.3
    assert curve_noise(noisy(LEVEL + np.exp(-t[:30] / 5), 0.002)) < 0.01
