"""Linear probe of a model's representation, with raw-pixel and random-init baselines (section ``probe``).

Protocol (recorded with the numbers in ``probe.protocol``):

* features: ``model.embed(x)`` of the frozen model in eval mode (batch norm uses its running statistics),
  for the train / val / test splits (train capped at ``num_train`` images for the large datasets);
* standardisation: each feature is centred and scaled by its mean and sd on the *training* features
  (scikit-learn's ``StandardScaler``; a constant feature is left unscaled);
* linear probe, full labels: multinomial logistic regression (scikit-learn, lbfgs, L2) on every training
  label; its inverse regularisation C is the value of ``c_grid`` with the best validation accuracy (ties →
  the smaller C); the reported number is the test accuracy of that fit (trained on train only);
* k-NN: the majority label of the ``k`` nearest training images in Euclidean distance of the standardised
  features (ties → scikit-learn's rule, the nearest-ranked label);
* low-label regime: ``labels_per_class`` labelled training images per class, a fixed subset (the first ones
  of each class in a permutation of the training split drawn with ``subset_seed``; the same images for every
  model and seed). The standardisation still uses all training features (they need no labels); C is chosen
  by stratified ``cv_folds``-fold cross-validation on the labelled images alone, so no other labels are used;
  k-NN uses the labelled images as its memory;
* baselines: the raw pixels (levels as floats, same protocol), and the same architecture untrained — the
  model rebuilt with the run's Config under the fixed seed ``random_init_seed + run seed`` (skipped for
  closed-form models, which have no random initialisation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import Result, cached_json, register_evaluator
from . import batched


@dataclass
class ProbeConfig:
    c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # logistic regression C values
    k: int = 5  # neighbours of the k-NN classifier
    labels_per_class: int = 10  # labelled images per class in the low-label regime
    subset_seed: int = 0  # seed of the fixed low-label subset
    cv_folds: int = 5  # folds choosing C in the low-label regime
    num_train: int = 10000  # training images used at most (the first ones); 0 = all
    num_eval: int = 0  # validation and test images used at most (the first ones of each); 0 = all
    max_iter: int = 1000  # lbfgs iterations per fit
    random_init_seed: int = 10000  # the untrained baseline is built under seed random_init_seed + run seed
    batch_size: int = 512  # images per embed() call
    cache_dir: str = "results/cache"  # the raw-pixel baseline (a property of the data) is cached here; "" = no cache

    def validate(self):
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("c_grid must hold positive values")
        if min(self.k, self.labels_per_class, self.max_iter, self.batch_size) < 1 or self.cv_folds < 2:
            raise ValueError("k, labels_per_class, max_iter, batch_size must be ≥ 1 and cv_folds ≥ 2")
        if self.num_train < 0 or self.num_eval < 0:
            raise ValueError(f"num_train and num_eval must be ≥ 0 (0 = all), got {self.num_train}, {self.num_eval}")


# --------------------------------------------------------------------------------------------- pieces
def extract_features(embed, x: torch.Tensor, batch_size: int, device) -> np.ndarray:
    """(N, F) float64 features of integer images x, computed in batches."""
    return batched(embed, x, batch_size, device).numpy()


def label_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of the first ``per_class`` images of each class in a permutation drawn with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(y))
    picked = [order[y[order] == c][:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def _fit_logreg(f: np.ndarray, y: np.ndarray, C: float, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(f, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf, converged


def linear_probe(f_train, y_train, f_val, y_val, f_test, y_test, c_grid, max_iter: int) -> dict:
    """Logistic regression with C chosen on the validation split; features already standardised."""
    best = None
    for C in sorted(c_grid):
        clf, conv = _fit_logreg(f_train, y_train, C, max_iter)
        acc = float((clf.predict(f_val) == y_val).mean())
        if best is None or acc > best[0]:
            best = (acc, C, clf, conv)
    val_acc, C, clf, conv = best
    return {"test_acc": float((clf.predict(f_test) == y_test).mean()), "val_acc": val_acc, "C": C, "converged": conv}


def linear_probe_cv(f_lab, y_lab, f_test, y_test, c_grid, max_iter: int, folds: int, seed: int) -> dict:
    """Logistic regression on a few labels, with C chosen by stratified k-fold cross-validation on them."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    best = None
    for C in sorted(c_grid):
        accs = [float((_fit_logreg(f_lab[tr], y_lab[tr], C, max_iter)[0].predict(f_lab[te]) == y_lab[te]).mean())
                for tr, te in splitter.split(f_lab, y_lab)]
        if best is None or np.mean(accs) > best[0]:
            best = (float(np.mean(accs)), C)
    cv_acc, C = best
    clf, conv = _fit_logreg(f_lab, y_lab, C, max_iter)
    return {"test_acc": float((clf.predict(f_test) == y_test).mean()), "cv_acc": cv_acc, "C": C, "converged": conv}


def knn_accuracy(f_train, y_train, f_test, y_test, k: int) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=min(k, len(y_train))).fit(f_train, y_train)
    return float((clf.predict(f_test) == y_test).mean())


def probe_features(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], cfg: ProbeConfig,
                   threads: int = 1) -> dict:
    """Every probe number for one feature set. feats/labels: split name → (N, F) features / (N,) labels.

    BLAS is held to ``threads`` threads: numpy's OpenBLAS starts one per core whatever OMP_NUM_THREADS says
    after import, and two oversubscribed jobs on two cores made lbfgs ~100× slower.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _probe_features(feats, labels, cfg)


@dataclass
class ProbeScores(Result):
    feature_dim: int  # F, width of the features
    linear_test_acc: float  # test accuracy of logistic regression on all training labels, C chosen on val
    linear_test_stderr: float  # binomial standard error of that accuracy over the test images
    linear_val_acc: float
    linear_C: float
    linear_converged: bool
    knn_acc: float  # test accuracy of k-NN on all training labels
    low_test_acc: float  # test accuracy of logistic regression on the low-label subset, C by stratified CV
    low_test_stderr: float
    low_cv_acc: float
    low_C: float
    low_converged: bool
    knn_low_acc: float  # k-NN on the low-label subset


def binomial_stderr(acc: float, n: int) -> float:
    """√(p(1 − p)/n): standard error of an accuracy measured on n independent test images."""
    return math.sqrt(acc * (1 - acc) / n) if n > 0 else math.nan


def _probe_features(feats, labels, cfg: ProbeConfig) -> ProbeScores:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats["train"])
    f = {s: scaler.transform(v) for s, v in feats.items()}
    y = labels
    lab = label_subset(y["train"], cfg.labels_per_class, cfg.subset_seed)
    n_test = len(y["test"])
    full = linear_probe(f["train"], y["train"], f["val"], y["val"], f["test"], y["test"], cfg.c_grid, cfg.max_iter)
    low = linear_probe_cv(f["train"][lab], y["train"][lab], f["test"], y["test"], cfg.c_grid, cfg.max_iter,
                          cfg.cv_folds, cfg.subset_seed)
    return ProbeScores(
        feature_dim=int(f["train"].shape[1]),
        linear_test_acc=full["test_acc"], linear_test_stderr=binomial_stderr(full["test_acc"], n_test),
        linear_val_acc=full["val_acc"], linear_C=full["C"], linear_converged=full["converged"],
        knn_acc=knn_accuracy(f["train"], y["train"], f["test"], y["test"], cfg.k),
        low_test_acc=low["test_acc"], low_test_stderr=binomial_stderr(low["test_acc"], n_test), low_cv_acc=low["cv_acc"],
        low_C=low["C"], low_converged=low["converged"],
        knn_low_acc=knn_accuracy(f["train"][lab], y["train"][lab], f["test"], y["test"], cfg.k),
    )


@dataclass
class ProbeProtocol(Result):
    c_grid: list[float]
    c_selection: str
    standardisation: str
    knn_k: int
    knn_metric: str
    labels_per_class: int
    subset_seed: int
    num_train: int
    num_low_label: int
    num_val: int
    num_test: int
    random_init_seed: int | None


@dataclass
class ProbeResult(ProbeScores):
    representation: str  # what embed() returns
    raw_pixels: ProbeScores  # the same probes on the raw pixels (a property of the data only)
    random_init: ProbeScores | None  # on an untrained twin (same architecture and Config)
    protocol: ProbeProtocol


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x.double().flatten(1)  # (B, D) levels as floats


def cached_raw_pixels(run_probe, xs: dict, labels: dict, cfg: ProbeConfig) -> "ProbeScores":
    """The raw-pixel baseline, kept in ``<cache_dir>/probe/<key>.json``: it depends on the images, the labels and
    the protocol only, yet every run of a dataset asked for it (~0.6 s each on digits, ~33 times a grid). The key
    hashes the exact image and label bytes of every split and the protocol's settings, so nothing else reads a
    stale entry; the file is written atomically, so parallel jobs at worst compute it twice."""
    h = hashlib.sha1()
    for split in sorted(xs):
        arr = np.ascontiguousarray(xs[split].numpy())
        h.update(f"{split}{arr.shape}{arr.dtype}".encode() + arr.tobytes() + np.ascontiguousarray(labels[split]).tobytes())
    protocol = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("cache_dir", "batch_size", "num_train",
                                                                          "num_eval", "random_init_seed")}
    h.update(json.dumps(protocol, sort_keys=True).encode())
    return cached_json(cfg.cache_dir, "probe", h.hexdigest(), lambda: run_probe(_pixels),
                       to_json=lambda scores: scores.to_dict(),
                       from_json=lambda d: ProbeScores.from_dict(d, where="the cached raw-pixel probe"))


# ------------------------------------------------------------------------------------------ evaluator
# The one evaluator that does not score the context's fixed test subset: a probe needs the labels and a validation
# split, and its protocol (the first num_train / num_eval images of each split) is recorded in its result.
@register_evaluator("probe", config=ProbeConfig, result=ProbeResult)
def evaluate_probe(ctx, cfg: ProbeConfig) -> ProbeResult | None:
    model = ctx.model
    if not model.can_embed:
        return None
    from ..models import get_model

    ds = ctx.dataset
    splits = {"train": ds.train, "val": ds.val, "test": ds.test}
    first = {s: (cfg.num_train if s == "train" else cfg.num_eval) or len(sp.x) for s, sp in splits.items()}
    xs = {s: sp.x[: first[s]] for s, sp in splits.items()}
    labels = {s: sp.y[: first[s]].numpy() for s, sp in splits.items()}

    def run_probe(embed) -> ProbeScores:
        feats = {s: extract_features(embed, x, cfg.batch_size, ctx.device) for s, x in xs.items()}
        return probe_features(feats, labels, cfg, threads=ctx.run.threads)

    model.eval()
    ours = run_probe(model.embed)
    random_init = None
    if not model.closed_form:
        # The same architecture and Config, untrained, under a fixed seed (restoring the RNG afterwards).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.random_init_seed + ctx.run.seed)
            fresh = get_model(ctx.run.model, ds.info, **dataclasses.asdict(ctx.run.hparams)).to(ctx.device).eval()
        random_init = run_probe(fresh.embed)
    protocol = ProbeProtocol(
        c_grid=[float(c) for c in cfg.c_grid],
        c_selection="val accuracy (full labels); stratified CV on the labelled subset (low-label)",
        standardisation="per-feature mean/sd of the training features",
        knn_k=cfg.k, knn_metric="euclidean on standardised features",
        labels_per_class=cfg.labels_per_class, subset_seed=cfg.subset_seed, num_train=len(xs["train"]),
        num_low_label=len(label_subset(labels["train"], cfg.labels_per_class, cfg.subset_seed)),
        num_val=len(xs["val"]), num_test=len(xs["test"]),
        random_init_seed=None if model.closed_form else cfg.random_init_seed + ctx.run.seed,
    )
    return ProbeResult(**dataclasses.asdict(ours), representation=model.embed_note,
                       raw_pixels=cached_raw_pixels(run_probe, xs, labels, cfg), random_init=random_init,
                       protocol=protocol)
