"""The linear probe: known answers on synthetic features, the fixed label subset, the evaluator's baselines,
and the table built from metrics files."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from conftest import make_ctx, make_run
from dgmbench.metrics.probe import (
    ProbeConfig,
    ProbeProtocol,
    ProbeResult,
    ProbeScores,
    binomial_stderr,
    evaluate_probe,
    label_subset,
    probe_features,
)


def _blob_splits(separation: float, num_classes: int = 5, dim: int = 12):
    """Gaussian blobs (unit variance) around class means drawn once and shared by the three splits."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(num_classes, dim)) * separation
    feats, labels = {}, {}
    for name, n in [("train", 60), ("val", 20), ("test", 40)]:  # images per class
        y = np.repeat(np.arange(num_classes), n)
        feats[name], labels[name] = means[y] + rng.normal(size=(len(y), dim)), y
    return feats, labels


def test_probe_is_perfect_on_linearly_separable_features():
    feats, labels = _blob_splits(separation=10.0)  # means ~10√2 sd apart per dimension: separable
    out = probe_features(feats, labels, ProbeConfig())
    assert out.linear_test_acc == 1.0 and out.knn_acc == 1.0
    assert out.low_test_acc >= 0.95 and out.knn_low_acc >= 0.95
    assert out.linear_C in ProbeConfig().c_grid and out.feature_dim == 12


def test_probe_is_at_chance_on_shuffled_labels():
    feats, labels = _blob_splits(separation=10.0)
    rng = np.random.default_rng(1)
    labels = {s: rng.permutation(y) for s, y in labels.items()}  # labels no longer related to the features
    out = probe_features(feats, labels, ProbeConfig())
    # chance = 1/5; with 200 test images the s.e. is 0.028, so ±0.12 is > 4 s.e.
    for acc in (out.linear_test_acc, out.knn_acc, out.low_test_acc, out.knn_low_acc):
        assert abs(acc - 0.2) < 0.12, out


def test_label_subset_is_fixed_and_balanced():
    y = np.repeat(np.arange(10), 30)
    a, b = label_subset(y, 10, seed=0), label_subset(y, 10, seed=0)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert np.array_equal(np.bincount(y[a]), np.full(10, 10))
    assert not np.array_equal(a, label_subset(y, 10, seed=1))


def _ctx(model, dataset, seed=0):
    run = types.SimpleNamespace(model=model.name, hparams=model.cfg, seed=seed, threads=1)
    return make_ctx(model.eval(), dataset, run=run)


def test_evaluator_baselines(digits):
    """Raw pixels and an untrained twin are probed beside the model; the twin leaves the RNG stream alone."""
    from dgmbench.models import get_model

    model = get_model("simclr", digits.info, channels=8, feature_dim=16)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    out = evaluate_probe(_ctx(model, digits), ProbeConfig(c_grid=[0.1, 1.0]))
    assert torch.equal(torch.rand(1), before), "the random-init baseline must not consume the global RNG"
    assert out.raw_pixels.feature_dim == digits.info.num_dims and out.feature_dim == 16
    assert out.random_init.feature_dim == 16
    assert out.protocol.num_low_label == 10 * digits.info.num_classes
    assert out.protocol.random_init_seed == ProbeConfig().random_init_seed
    # The twin is a different network from the model (another seed), so its features differ.
    assert out.random_init.linear_val_acc != out.linear_val_acc or \
        out.random_init.knn_acc != out.knn_acc
    # Raw pixels of 8×8 digits are far above chance (a sanity check of the data path, not of a model).
    assert out.raw_pixels.linear_test_acc > 0.85


def test_raw_pixel_baseline_is_computed_once_per_data_and_protocol(digits, tmp_path):
    """The raw-pixel probe depends on the data and the protocol only: the second run of a dataset reads it from the
    cache (a planted value comes back), another protocol or other images miss it and compute their own."""
    import json

    from dgmbench.models import get_model

    pca = get_model("pca", digits.info, num_components=8)
    pca.train_step(digits.train.x, [], None)
    cfg = ProbeConfig(c_grid=[1.0], num_train=300, cache_dir=str(tmp_path))
    first = evaluate_probe(_ctx(pca, digits), cfg).raw_pixels
    (entry,) = (tmp_path / "probe").glob("*.json")
    assert json.loads(entry.read_text()) == first.to_dict()
    entry.write_text(json.dumps({**first.to_dict(), "linear_test_acc": 0.123}))  # planted
    assert evaluate_probe(_ctx(pca, digits), cfg).raw_pixels.linear_test_acc == 0.123  # read, not recomputed
    other = evaluate_probe(_ctx(pca, digits), ProbeConfig(c_grid=[0.1], num_train=300, cache_dir=str(tmp_path)))
    fewer = evaluate_probe(_ctx(pca, digits), ProbeConfig(c_grid=[1.0], num_train=200, cache_dir=str(tmp_path)))
    assert other.raw_pixels.linear_test_acc != 0.123 and fewer.raw_pixels.linear_test_acc != 0.123
    assert len(list((tmp_path / "probe").glob("*.json"))) == 3
    entry.write_text("{damaged")
    assert evaluate_probe(_ctx(pca, digits), cfg).raw_pixels == first  # a damaged entry is recomputed


def test_evaluator_skips_models_without_representation_and_random_init_of_closed_form(digits):
    from dgmbench.models import MODELS, get_model

    no_embed = [n for n in MODELS.names() if not MODELS.get(n).can_embed]
    if no_embed:
        assert evaluate_probe(_ctx(get_model(no_embed[0], digits.info), digits), ProbeConfig()) is None
    pca = get_model("pca", digits.info, num_components=8)
    pca.train_step(digits.train.x, [], None)
    out = evaluate_probe(_ctx(pca, digits), ProbeConfig(c_grid=[1.0]))
    assert out.random_init is None and out.protocol.random_init_seed is None


def test_evaluator_num_eval_probes_on_the_first_val_and_test_images(digits):
    """num_eval = n scores the first n validation and test images: the raw-pixel k-NN accuracy then equals one
    computed by hand on exactly those images (train features standardised as the probe does)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from dgmbench.models import get_model

    pca = get_model("pca", digits.info, num_components=8)
    pca.train_step(digits.train.x, [], None)
    out = evaluate_probe(_ctx(pca, digits), ProbeConfig(c_grid=[1.0], num_train=300, num_eval=50))
    assert (out.protocol.num_train, out.protocol.num_val, out.protocol.num_test) == (300, 50, 50)
    f_train, f_test = (sp.x[:n].double().flatten(1).numpy() for sp, n in ((digits.train, 300), (digits.test, 50)))
    scaler = StandardScaler().fit(f_train)
    knn = KNeighborsClassifier(n_neighbors=5).fit(scaler.transform(f_train), digits.train.y[:300].numpy())
    expected = float((knn.predict(scaler.transform(f_test)) == digits.test.y[:50].numpy()).mean())
    assert out.raw_pixels.knn_acc == pytest.approx(expected)
    whole = evaluate_probe(_ctx(pca, digits), ProbeConfig(c_grid=[1.0], num_train=300))
    assert whole.protocol.num_test == len(digits.test.x)
    with pytest.raises(ValueError, match="num_eval"):
        ProbeConfig(num_eval=-1).validate()


def test_probe_table(tmp_path):
    from dgmbench.tables.probe import probe_table

    def block(acc, feature_dim=4):
        return dict(feature_dim=feature_dim, linear_test_acc=acc, linear_test_stderr=binomial_stderr(acc, 5),
                    linear_val_acc=acc, linear_C=1.0, linear_converged=True, knn_acc=acc, low_test_acc=acc / 2,
                    low_test_stderr=binomial_stderr(acc / 2, 5), low_cv_acc=acc / 2, low_C=1.0, low_converged=True,
                    knn_low_acc=acc / 2)

    def section(acc):
        protocol = ProbeProtocol(standardisation="train", c_grid=[1.0], c_selection="val", knn_k=5,
                                 knn_metric="euclidean", num_train=10, labels_per_class=1, num_low_label=2,
                                 subset_seed=0, num_val=5, num_test=5, random_init_seed=10000)
        return ProbeResult(**block(acc), representation="h", raw_pixels=ProbeScores(**block(acc, feature_dim=64)),
                           random_init=ProbeScores(**block(acc)), protocol=protocol)

    runs = [make_run("digits", "enc", s, family="ssl", probe=section(acc)) for s, acc in enumerate([0.8, 0.9])]
    runs.append(make_run("digits", "gen", 0, family="g"))
    csv, md = [p for p in probe_table(runs, tmp_path) if p.suffix in (".csv", ".md")]
    import pandas as pd

    df = pd.read_csv(csv)
    assert list(df["representation"]) == ["enc: h", "enc, untrained (random init)", "raw pixels"]
    assert df.loc[0, "linear (all labels)"] == "85.0 ± 7.1"  # mean ± sample sd of 80 and 90
    assert df.loc[0, "k-NN (1/class)"] == "42.5 ± 3.5"
    assert df.loc[2, "features"] == 64 and df.loc[2, "linear (all labels)"] == "80.0"
    assert "k = 5" in md.read_text()
