"""OOD detection: AUROC / FPR95 against hand-worked cases and sklearn, the scores' building blocks, and the whole
evaluator on toy2d densities whose exact pmfs give the exact AUROC by enumeration over the 64×64 grid."""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_ctx, make_run
from dgmbench.data import TOY_DENSITIES, load_dataset
from dgmbench.metrics.ood import (
    OODConfig,
    OODResult,
    OODScore,
    OODSet,
    auroc,
    evaluate_ood,
    fpr_at_tpr,
    make_transform,
    png_bits,
    same_shape_datasets,
    typicality_scores,
)
from dgmbench.models.base import GenerativeModel, Likelihood


# ------------------------------------------------------------------------------------------- AUROC and FPR95
def test_perfect_separation():
    s_in, s_ood = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.9])
    assert auroc(s_in, s_ood) == 1.0
    assert fpr_at_tpr(s_in, s_ood) == 0.0


def test_reversed_separation():
    s_in, s_ood = np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0])
    assert auroc(s_in, s_ood) == 0.0
    assert fpr_at_tpr(s_in, s_ood) == 1.0  # catching 95% of OOD flags every in-distribution image


def test_all_ties():
    s = np.full(4, 3.0)
    assert auroc(s, s[:3]) == 0.5
    assert fpr_at_tpr(s, s[:3]) == 1.0


def test_hand_worked_example():
    # OOD 2.5 beats {1, 2}; 3.5 beats {1, 2, 3}; 5 beats all four: 9 of 12 pairs.
    s_in, s_ood = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.5, 3.5, 5.0])
    assert auroc(s_in, s_ood) == pytest.approx(9 / 12)
    # 95% TPR of 3 OOD images needs all 3 flagged: threshold 2.5 also flags in-dist {3, 4}.
    assert fpr_at_tpr(s_in, s_ood) == pytest.approx(2 / 4)
    # At 60% TPR two OOD images suffice: threshold 3.5 flags only in-dist {4}.
    assert fpr_at_tpr(s_in, s_ood, tpr=0.6) == pytest.approx(1 / 4)


def test_hand_worked_example_with_ties():
    # OOD 2 vs in {1, 2, 2}: 1 + ½ + ½; OOD 3 beats all three: (2 + 3) / 6.
    s_in, s_ood = np.array([1.0, 2.0, 2.0]), np.array([2.0, 3.0])
    assert auroc(s_in, s_ood) == pytest.approx(5 / 6)
    assert fpr_at_tpr(s_in, s_ood) == pytest.approx(2 / 3)  # threshold 2 flags both tied in-dist scores


def test_infinite_scores_rank_and_nan_propagates():
    assert auroc(np.array([1.0, 2.0]), np.array([np.inf, 3.0])) == 1.0
    assert math.isnan(auroc(np.array([1.0, np.nan]), np.array([2.0])))
    assert math.isnan(fpr_at_tpr(np.array([1.0]), np.array([np.nan])))


def test_against_sklearn_on_random_scores_with_ties():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for _ in range(20):
        s_in = rng.integers(0, 12, size=rng.integers(5, 60)).astype(float)  # coarse values: many ties
        s_ood = rng.integers(3, 15, size=rng.integers(5, 60)).astype(float)
        labels = np.r_[np.zeros(len(s_in)), np.ones(len(s_ood))]
        scores = np.r_[s_in, s_ood]
        assert auroc(s_in, s_ood) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        assert fpr_at_tpr(s_in, s_ood) == pytest.approx(fpr[tpr >= 0.95].min(), abs=1e-12)


def test_auroc_is_swap_antisymmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(0.5, 1, size=30)
    assert auroc(a, b) + auroc(b, a) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ score components
def test_typicality_scores():
    nll = np.array([1.0, 2.0, 3.0, 6.0])
    # M = 1: the per-image distance to Ĥ (in a permuted order).
    assert sorted(typicality_scores(nll, 2.5, batch=1, seed=0)) == sorted(np.abs(nll - 2.5))
    # M = N: one batch, the distance of the set's mean NLL (3.0) to Ĥ.
    assert typicality_scores(nll, 2.5, batch=4, seed=0) == pytest.approx([0.5])
    assert len(typicality_scores(np.arange(11.0), 0.0, batch=5, seed=0)) == 2  # leftovers dropped
    with pytest.raises(ValueError):
        typicality_scores(nll, 2.5, batch=5, seed=0)


def test_png_bits_measures_the_compressed_image_stream():
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, size=(1, 1, 28, 28))).to(torch.uint8)
    flat = torch.full((1, 1, 28, 28), 7, dtype=torch.uint8)
    b_noise, b_flat = png_bits(noise)[0], png_bits(flat)[0]
    assert b_flat < 0.5 * 784 < 8 * 784 <= b_noise  # constant ≪ 1 bit/pixel; noise cannot go below 8 bits/pixel
    # The counted bytes are exactly a zlib stream that inflates to the filtered rows: H × (1 filter byte + W).
    buf = io.BytesIO()
    Image.fromarray(flat[0, 0].numpy()).save(buf, format="PNG", compress_level=9)
    png = buf.getvalue()
    start = png.index(b"IDAT") + 4
    payload = png[start : start + int(b_flat) // 8]
    assert len(zlib.decompress(payload)) == 28 * (1 + 28)
    assert np.array_equal(png_bits(noise.repeat(2, 1, 1, 1)), [b_noise, b_noise])  # deterministic


def test_transforms_keep_shape_dtype_and_levels():
    x = load_dataset("digits").test.x[:50]
    rng = np.random.default_rng(0)
    for name in ("noise", "constant", "hflip"):
        t = make_transform(name, x, 17, rng)
        assert t.shape == x.shape and t.dtype == x.dtype and int(t.max()) < 17
    assert torch.equal(make_transform("hflip", x, 17, rng)[..., 0], x[..., -1])
    const = make_transform("constant", x, 17, rng)
    assert (const == const[:, :, :1, :1]).all()
    noise = make_transform("noise", torch.zeros(4000, 1, 8, 8, dtype=torch.uint8), 17, rng)
    counts = torch.bincount(noise.flatten().long(), minlength=17).double()
    assert (counts / counts.sum() - 1 / 17).abs().max() < 0.01  # uniform over the 17 levels (256k draws)


def test_same_shape_datasets():
    assert same_shape_datasets("digits") == []
    assert set(same_shape_datasets("fashion-mnist")) >= {"mnist5k", "animal-mnist"}
    assert "mnist" not in same_shape_datasets("mnist5k")  # same source: a subset of MNIST is not OOD for it
    assert set(same_shape_datasets("toy2d-ring")) == {"toy2d-gaussian", "toy2d-checker"}


def test_config_rejects_unknown_transform():
    from dgmbench.config import ConfigError, build_dataclass

    with pytest.raises(ConfigError, match="valid transforms"):
        build_dataclass(OODConfig, {"transforms": ["rotate"]}, where="eval.ood")


# ------------------------------------------------------------------------------ the evaluator on exact pmfs
@dataclass
class _NoConfig:
    pass


class ExactToy(GenerativeModel):
    """log p(x) = the exact pmf of a toy2d density: x (B, 1, 1, 2) holds the two cell indices."""

    Config = _NoConfig
    likelihood = Likelihood.EXACT
    estimator = "exact"

    def __init__(self, density, info):
        super().__init__(_NoConfig(), info)
        self.register_buffer("log_pmf", torch.from_numpy(np.log(density.pmf())))

    def _log_prob(self, x):
        return self.log_pmf[x[:, 0, 0, 0], x[:, 0, 0, 1]]


def exact_auroc(p_in: np.ndarray, p_ood: np.ndarray, score: np.ndarray) -> float:
    """Population AUROC of a per-cell score, by enumerating all 4096 × 4096 pairs of cells."""
    p_in, p_ood, score = p_in.ravel(), p_ood.ravel(), score.ravel()
    total = 0.0
    for i in range(0, len(score), 512):  # in-distribution cells i, OOD cells j: P(s_j > s_i) + ½ P(s_j = s_i)
        s_i = score[i : i + 512, None]
        wins = (score[None, :] > s_i) + 0.5 * (score[None, :] == s_i)
        total += p_in[i : i + 512] @ wins @ p_ood
    return float(total)


def exact_fpr_at(p_in: np.ndarray, p_ood: np.ndarray, score: np.ndarray, tpr: float) -> float:
    """Population FPR at the largest threshold whose population TPR is ≥ ``tpr`` (cells flagged highest first)."""
    p_in, p_ood, score = p_in.ravel(), p_ood.ravel(), score.ravel()
    order = np.argsort(-score, kind="stable")
    k = np.searchsorted(np.cumsum(p_ood[order]), tpr - 1e-12)
    return float(p_in[score >= score[order][k]].sum())


@pytest.fixture(scope="module")
def ring_report():
    ds = load_dataset("toy2d-ring")
    ring = TOY_DENSITIES["toy2d-ring"]
    model = ExactToy(ring, ds.info).eval()
    ctx = make_ctx(model, ds, run=SimpleNamespace(data_root=None, seed=0))  # the whole test split: 2000 images
    return evaluate_ood(ctx, OODConfig(typicality_batch=5))


def test_evaluator_finds_the_same_shape_datasets(ring_report):
    assert set(ring_report.sets) == {"toy2d-gaussian", "toy2d-checker", "noise", "constant", "hflip"}
    assert ring_report.num_in == 2000 and ring_report.skipped == {}
    # Ĥ from the exact model on 2000 training samples estimates the ring's entropy (in bits/dim, D = 2).
    assert ring_report.entropy_bpd == pytest.approx(TOY_DENSITIES["toy2d-ring"].entropy_nats() / (2 * math.log(2)), abs=0.05)


@pytest.mark.parametrize("ood_name, p_ood", [
    ("toy2d-gaussian", TOY_DENSITIES["toy2d-gaussian"].pmf()),
    ("noise", np.full((64, 64), 1 / 4096)),  # uniform noise = uniform over the grid's cells
])
def test_likelihood_auroc_matches_exact_enumeration(ring_report, ood_name, p_ood):
    p_ring = TOY_DENSITIES["toy2d-ring"].pmf()
    score = -np.log(p_ring)
    exact_auc = exact_auroc(p_ring, p_ood, score)
    got = ring_report.sets[ood_name].scores["likelihood"]
    n = 2000  # in-distribution and OOD samples
    # The AUROC's standard error is ≤ √(2/(12 n)) ≈ 0.009 for 2000 vs 2000 samples; allow 4 of them.
    assert got.auroc == pytest.approx(exact_auc, abs=0.037)
    assert 0.5 < exact_auc < 1.0  # the two densities overlap, but the ring's own samples are likelier
    # FPR95 uses the sample's 95% quantile of OOD scores, whose population TPR is 0.95 ± ~√(.95·.05/n); where
    # the ROC is steep that moves the FPR a lot, so bracket it by the exact FPR 4 standard errors either side,
    # widened by the in-distribution sampling error.
    delta = 4 * math.sqrt(0.95 * 0.05 / n)
    lo, hi = exact_fpr_at(p_ring, p_ood, score, 0.95 - delta), exact_fpr_at(p_ring, p_ood, score, 0.95 + delta)
    eps = 4 * math.sqrt(0.25 / n)
    assert lo - eps <= got.fpr95 <= hi + eps
    assert hi - lo < 0.5  # the bracket is informative


def test_typicality_flags_sets_that_are_too_likely():
    """Nalisnick et al.'s point: images at the mode are likelier than typical samples, so the likelihood score
    ranks them as in-distribution (AUROC ≈ 0), while the typicality test flags them (AUROC ≈ 1)."""
    ds = load_dataset("toy2d-ring")
    ring = TOY_DENSITIES["toy2d-ring"]
    model = ExactToy(ring, ds.info).eval()
    mode = np.unravel_index(np.argmax(ring.pmf()), (64, 64))
    x_in = ds.test.x.long()
    in_nll = -model.log_prob(x_in).numpy() / (2 * math.log(2))
    mode_nll = np.full(len(x_in), -np.log(ring.pmf()[mode]) / (2 * math.log(2)))
    entropy = float(-model.log_prob(ds.train.x).mean()) / (2 * math.log(2))
    assert auroc(in_nll, mode_nll) < 0.05
    t_in = typicality_scores(in_nll, entropy, 5, 0)
    t_mode = typicality_scores(mode_nll, entropy, 5, 1)
    assert auroc(t_in, t_mode) > 0.95


def test_evaluator_on_trained_free_model_skips_families_without_likelihood(digits):
    class NoLik(GenerativeModel):
        Config = _NoConfig
        likelihood = Likelihood.NONE

    ctx = make_ctx(NoLik(_NoConfig(), digits.info), digits, run=SimpleNamespace(data_root=None))
    assert evaluate_ood(ctx, OODConfig()) is None


def test_ood_table(tmp_path):
    from dgmbench.tables.ood import ood_table

    def run(seed, auc, status="ok"):
        scores = {s: OODScore(auroc=auc, fpr95=1 - auc, num_in=10, num_ood=10) for s in ("likelihood", "typicality")}
        ood = OODResult(estimator="ELBO", positive_class="ood", num_in=10, images_sha1="0" * 16, in_nll_bpd_mean=4.0,
                        in_png_bpd_mean=5.0, entropy_bpd=4.0, entropy_split="train", num_entropy=10, typicality_batch=5,
                        sets={"mnist5k": OODSet(kind="dataset", num_images=10, nll_bpd_mean=3.0, png_bpd_mean=4.0,
                                                scores=scores)},
                        skipped={"mnist": "mnist needs the torchvision files locally: set data_root"})
        return make_run("fashion-mnist", "vae", seed, status=status, family="VAE", ood=ood)

    written = ood_table([run(0, 0.2), run(1, 0.4), run(2, 0.99, status="diverged")], tmp_path)
    paths = [p for p in written if p.suffix in (".csv", ".md")]  # ood.csv, ood.md, ood_auroc.csv, ood_auroc.md
    import pandas as pd

    df = pd.read_csv(paths[0])
    assert len(df) == 2 and set(df["score"]) == {"likelihood", "typicality"}
    row = df[df["score"] == "likelihood"].iloc[0]
    assert row["train → OOD"] == "fashion-mnist → mnist5k"
    assert row["AUROC"] == f"0.300 ± {np.std([0.2, 0.4], ddof=1):.3f}"  # the diverged seed is left out
    assert row["seeds"] == "2/3"
    assert "mnist: not measured" in paths[1].read_text()
    wide = pd.read_csv(paths[2])  # ood_auroc: the same AUROCs, one column per score
    assert len(wide) == 1 and list(wide.columns[3:5]) == ["AUROC likelihood", "AUROC typicality"]
    assert wide["AUROC likelihood"].iloc[0] == row["AUROC"] and wide["seeds"].iloc[0] == "2/3"
