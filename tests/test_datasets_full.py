"""Every registered dataset: documented split sizes, shapes, dtype, levels and labels; the digits split exactly;
the toy2d pmfs against closed forms, and their samples against the pmfs. Datasets that are not installed are
skipped with the command that installs them as the reason."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, norm

from dgmbench.data import TOY_DENSITIES, DatasetUnavailable, dataset_info, list_datasets, load_dataset

# name → (train, val, test) sizes as documented in dgmbench/data.py
SIZES = {
    "digits": (1000, 350, 447),
    "fashion-mnist": (50000, 10000, 10000),
    "mnist5k": (3000, 1000, 1000),
    "animal-mnist": (6716, 1500, 1500),  # the 9,716 distinct images of the package
    "mnist": (50000, 10000, 10000),
    "cifar10": (45000, 5000, 10000),
    "toy2d-ring": (10000, 2000, 2000),
    "toy2d-gaussian": (10000, 2000, 2000),
    "toy2d-checker": (10000, 2000, 2000),
}
SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}  # 28×28 grey unless listed; toy2d below
SPLITS = ("train", "val", "test")


def load_or_skip(name):
    try:
        return load_dataset(name)
    except DatasetUnavailable as err:
        pytest.skip(str(err))  # the message is the install command (or where to put the files)


def test_every_registered_dataset_is_documented_here():
    assert set(list_datasets()) == set(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_splits_shapes_levels_labels(name):
    ds = load_or_skip(name)
    info = dataset_info(name)
    expected_shape = (1, 1, 2) if name.startswith("toy2d") else SHAPES.get(name, (1, 28, 28))
    assert info.shape == expected_shape
    assert info.num_levels == {"digits": 17}.get(name, 64 if name.startswith("toy2d") else 256)
    for split, size in zip(SPLITS, SIZES[name]):
        s = ds.split(split)
        assert s.x.shape == (size, *expected_shape), split
        assert s.x.dtype == torch.uint8 and s.y.dtype == torch.int64 and s.y.shape == (size,)
        assert int(s.x.min()) >= 0 and int(s.x.max()) < info.num_levels
        assert int(s.y.min()) >= 0 and int(s.y.max()) < info.num_classes
    if info.num_levels == 256:  # 8-bit images use (nearly) the whole range, not e.g. [0, 1] floats cast to 0/1
        assert int(ds.train.x.max()) == 255 and len(torch.unique(ds.test.x)) > 200


@pytest.mark.parametrize("name", [
    "digits", "fashion-mnist", "mnist5k", "toy2d-ring", "toy2d-checker",
    "toy2d-gaussian",
    "animal-mnist",
])
def test_every_class_appears_in_every_split(name):
    ds = load_or_skip(name)
    for split in SPLITS:
        assert set(ds.split(split).y.tolist()) == set(range(ds.info.num_classes)), split


@pytest.mark.parametrize("name", [
    "digits", "fashion-mnist", "mnist5k",
    "animal-mnist",
])
def test_splits_share_no_image(name):
    ds = load_or_skip(name)
    hashes = [{hashlib.sha1(x.numpy().tobytes()).digest() for x in ds.split(s).x} for s in SPLITS]
    assert not (hashes[0] & hashes[1]) and not (hashes[0] & hashes[2]) and not (hashes[1] & hashes[2])


def test_digits_split_is_exactly_intro_dgm_s():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits")
    for split, (i, j) in zip(SPLITS, [(0, 1000), (1000, 1350), (1797 - 447, 1797)]):
        assert np.array_equal(ds.split(split).x[:, 0].numpy(), bunch.images[i:j].astype(np.uint8)), split
        assert np.array_equal(ds.split(split).y.numpy(), bunch.target[i:j]), split


# ---------------------------------------------------------------------------------------------------- toy2d
@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_toy_pmf_is_normalised(name):
    p = TOY_DENSITIES[name].pmf()
    assert p.shape == (64, 64) and (p >= 0).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_toy_pmfs_against_closed_forms():
    g = TOY_DENSITIES["toy2d-gaussian"].pmf()
    # Cells are 1/8 wide from -4: cell 32 starts at 0, cells 24..39 cover [-1, 1]; the outer cells reach ±∞.
    assert g[32:].sum() == pytest.approx(0.5, abs=1e-12)
    assert g[24:40, 24:40].sum() == pytest.approx((norm.cdf(1) - norm.cdf(-1)) ** 2, abs=1e-12)
    c = TOY_DENSITIES["toy2d-checker"].pmf()
    assert set(np.unique(c)) == {0.0, 1 / 2048}  # half the cells, equally likely
    assert c[:16, :16].sum() == pytest.approx(1 / 8)  # one dark 2×2 square of eight
    r = TOY_DENSITIES["toy2d-ring"].pmf()
    assert np.allclose(r, r.T) and np.allclose(r, r[::-1]) and np.allclose(r, np.rot90(r))  # the ring's symmetries


def chi_square_pvalue(x: torch.Tensor, pmf: np.ndarray) -> float:
    """χ² goodness of fit of cell samples (N, 1, 1, 2) to a pmf, on 8×8 blocks of cells (blocks with an
    expected count below 5 pooled into one bin)."""
    i, j = x[:, 0, 0, 0].numpy() // 8, x[:, 0, 0, 1].numpy() // 8
    observed = np.bincount(i * 8 + j, minlength=64).astype(float)
    expected = pmf.reshape(8, 8, 8, 8).sum(axis=(1, 3)).ravel() * len(x)
    small = expected < 5
    observed = np.r_[observed[~small], observed[small].sum()]
    expected = np.r_[expected[~small], expected[small].sum()]
    keep = expected > 0
    return float(chisquare(observed[keep], expected[keep]).pvalue)


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_toy_samples_follow_their_pmf(name):
    ds = load_dataset(name)
    pmf = TOY_DENSITIES[name].pmf()
    for split in SPLITS:
        assert chi_square_pvalue(ds.split(split).x, pmf) > 1e-3, split  # fixed seeds: deterministic
    # The test has power: the same samples against another density's pmf are rejected outright.
    other = "toy2d-gaussian" if name != "toy2d-gaussian" else "toy2d-ring"
    assert chi_square_pvalue(ds.train.x, TOY_DENSITIES[other].pmf()) < 1e-10
    # Total variation between the empirical cell frequencies and the pmf is small, and smaller for the
    # 10,000 training samples than for the 2,000 validation samples (it falls like 1/√n).
    def tv(x):
        counts = np.bincount(x[:, 0, 0, 0].numpy().astype(int) * 64 + x[:, 0, 0, 1].numpy(), minlength=4096)
        return 0.5 * np.abs(counts / len(x) - pmf.ravel()).sum()

    assert tv(ds.train.x) < 0.3 and tv(ds.train.x) < tv(ds.val.x)
