"""Out-of-distribution detection with a model of p(x): does the likelihood tell inputs unlike the training data?

A model trained on one dataset scores its in-distribution test images and OOD sets of the same shape and
levels: the other installed datasets of that shape (for 28×28: fashion-mnist ↔ mnist5k ↔ animal-mnist) and
simple transforms of the in-distribution test images (uniform noise, constant images, horizontal flips).
Positive class = OOD; a higher score means "more OOD". Three scores:

* ``likelihood`` — the negative log-likelihood (or bound) in bits/dim, s(x) = −log₂ p(x) / D.
  Nalisnick et al. (2019, "Do deep generative models know what they don't know?") found that models trained
  on Fashion-MNIST give MNIST *higher* likelihood, so this AUROC can fall below 0.5.
* ``typicality`` — the typicality test of Nalisnick et al. (2019, "Detecting out-of-distribution inputs to
  deep generative models using typicality"): for a batch of M images,
  s = | (1/M) Σ_m −log₂ p(x_m)/D − Ĥ |, with Ĥ the mean NLL on the training split (an estimate of the
  entropy rate of the model). A set can be OOD by being *too likely* as well as too unlikely. Scored per
  batch of M images, so its AUROC compares batches, not single images.
* ``complexity`` — the input-complexity correction of Serrà et al. (2020, "Input complexity and
  out-of-distribution detection with likelihood-based generative models"): s(x) = (−log₂ p(x) − L(x)) / D,
  with L(x) the length in bits of a lossless code of x from a generic compressor (here PNG via Pillow,
  counting the compressed image-data payload). It is a log-likelihood ratio against a generic "universal"
  model, so simple images no longer look likely just for being simple.

Each (OOD set, score) gets the AUROC (Mann–Whitney, ties counted ½) and the FPR at 95% TPR. OOD sets are
subsampled to the in-distribution test size with a fixed seed, so every model and seed sees the same images.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..data import DatasetUnavailable, dataset_info, list_datasets, load_dataset
from ..distributions import nats_to_bits_per_dim
from ..models.base import Likelihood
from . import Result, batched, fixed_rng, register_evaluator, subsample

TRANSFORMS = ("noise", "constant", "hflip")
SCORES = ("likelihood", "typicality", "complexity")
# Datasets drawn from the same source are not OOD for each other (mnist5k is a subset of MNIST's training set).
SAME_SOURCE = ({"mnist", "mnist5k"},)


@dataclass
class OODConfig:
    num_entropy: int = 2000  # images of `entropy_split` whose mean NLL estimates the entropy Ĥ (typicality test)
    entropy_split: Literal["train", "val"] = "train"  # split for Ĥ: "train" (Nalisnick et al.) or "val"
    typicality_batch: int = 5  # M, images per batch in the typicality test
    transforms: list[str] = field(default_factory=lambda: list(TRANSFORMS))  # transforms of the test images used as OOD sets
    other_datasets: bool = True  # also use every other installed dataset with the same shape and levels
    batch_size: int = 256  # images per forward pass
    seed: int = 0  # seed of the subsamples, transforms and typicality batches (the same for every run)

    def validate(self):
        if min(self.num_entropy, self.typicality_batch, self.batch_size) < 1:
            raise ValueError("num_entropy, typicality_batch and batch_size must be ≥ 1")
        unknown = sorted(set(self.transforms) - set(TRANSFORMS))
        if unknown:
            raise ValueError(f"unknown transform {unknown[0]!r}; valid transforms: {', '.join(TRANSFORMS)}")


# ------------------------------------------------------------------------------------------- detection metrics
def auroc(score_in: np.ndarray, score_ood: np.ndarray) -> float:
    """Area under the ROC curve with OOD as the positive class: P(s_ood > s_in) + ½ P(s_ood = s_in).

    Computed from ranks (the Mann–Whitney U statistic): AUROC = (R_ood − n_ood(n_ood+1)/2) / (n_in n_ood), with
    R_ood the sum of the OOD scores' ranks in the pooled sample and tied scores given their average rank.
    NaN scores give NaN.
    """
    s_in, s_ood = np.asarray(score_in, dtype=np.float64), np.asarray(score_ood, dtype=np.float64)
    if len(s_in) == 0 or len(s_ood) == 0:
        raise ValueError("auroc needs at least one in-distribution and one OOD score")
    if np.isnan(s_in).any() or np.isnan(s_ood).any():
        return math.nan
    from scipy.stats import rankdata  # here, not at the top: scipy.stats costs every job ~1 s to import

    ranks = rankdata(np.concatenate([s_in, s_ood]))  # average ranks for ties; ±inf rank like any value
    n_in, n_ood = len(s_in), len(s_ood)
    u = ranks[n_in:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u / (n_in * n_ood))


def fpr_at_tpr(score_in: np.ndarray, score_ood: np.ndarray, tpr: float = 0.95) -> float:
    """Smallest false-positive rate over thresholds t ("OOD if s ≥ t") whose true-positive rate is ≥ ``tpr``.

    Both rates fall as t grows, so the best threshold is the largest t that still flags ⌈tpr·n_ood⌉ OOD
    scores: the ⌈tpr·n_ood⌉-th largest OOD score. FPR = fraction of in-distribution scores ≥ that t.
    """
    s_in, s_ood = np.asarray(score_in, dtype=np.float64), np.asarray(score_ood, dtype=np.float64)
    if len(s_in) == 0 or len(s_ood) == 0:
        raise ValueError("fpr_at_tpr needs at least one in-distribution and one OOD score")
    if np.isnan(s_in).any() or np.isnan(s_ood).any():
        return math.nan
    k = max(1, math.ceil(tpr * len(s_ood) - 1e-9))  # OOD images that must be flagged
    threshold = np.sort(s_ood)[::-1][k - 1]
    return float((s_in >= threshold).mean())


# ------------------------------------------------------------------------------------------------- the scores
def typicality_scores(nll_bpd: np.ndarray, entropy_bpd: float, batch: int, seed: int) -> np.ndarray:
    """(⌊N/M⌋,) |mean NLL of a batch of M images − Ĥ|, batches cut from a fixed permutation (leftovers dropped)."""
    nll_bpd = np.asarray(nll_bpd, dtype=np.float64)
    num_batches = len(nll_bpd) // batch
    if num_batches == 0:
        raise ValueError(f"typicality test: {len(nll_bpd)} images give no batch of {batch}")
    order = np.random.default_rng(seed).permutation(len(nll_bpd))[: num_batches * batch]
    means = nll_bpd[order].reshape(num_batches, batch).mean(1)  # (num_batches,)
    return np.abs(means - entropy_bpd)


def _png_idat_bytes(png: bytes) -> int:
    """Bytes of compressed image data in a PNG file: the IDAT chunks' payload, without the fixed framing."""
    pos, total = 8, 0  # skip the 8-byte signature; chunks are length(4) type(4) data crc(4)
    while pos + 8 <= len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        if png[pos + 4 : pos + 8] == b"IDAT":
            total += length
        pos += 12 + length
    return total


def png_bits(x: torch.Tensor) -> np.ndarray:
    """(N,) lossless code length in bits of each image under PNG (Pillow, deflate level 9).

    Images (N, C, H, W) of integer levels < 256 are written as they are (8-bit grey for C = 1, RGB for C = 3,
    channels stacked vertically otherwise). Only the compressed data stream (IDAT payload, including zlib's
    2-byte header and 4-byte checksum) is counted: the PNG signature and header chunks are the same for every
    image of a shape and would only shift all scores by a constant.
    """
    from PIL import Image

    arr = x.detach().cpu().numpy()
    if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
        raise ValueError("png_bits needs levels in 0..255")
    arr = arr.astype(np.uint8)
    n, c, h, w = arr.shape
    out = np.empty(n)
    for i, img in enumerate(arr):
        plane = img.transpose(1, 2, 0) if c == 3 else img.reshape(c * h, w)  # (H, W, 3) or (C·H, W)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(plane)).save(buf, format="PNG", compress_level=9)
        out[i] = 8.0 * _png_idat_bytes(buf.getvalue())
    return out


def make_transform(name: str, x: torch.Tensor, num_levels: int, rng: np.random.Generator) -> torch.Tensor:
    """An OOD set built from in-distribution images ``x`` (N, C, H, W): same shape, dtype and levels."""
    n = len(x)
    if name == "noise":  # every pixel i.i.d. uniform over the levels
        out = rng.integers(0, num_levels, size=tuple(x.shape))
    elif name == "constant":  # one level per image, uniform over the levels
        out = np.broadcast_to(rng.integers(0, num_levels, size=(n, 1, 1, 1)), tuple(x.shape))
    elif name == "hflip":  # mirror left ↔ right
        return torch.flip(x, dims=[3])
    else:
        raise ValueError(f"unknown transform {name!r}; valid transforms: {', '.join(TRANSFORMS)}")
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)


def same_shape_datasets(name: str) -> list[str]:
    """Registered datasets with the shape and levels of ``name`` that may serve as its OOD sets."""
    info = dataset_info(name)
    related = set().union(*(group for group in SAME_SOURCE if name in group))
    return [
        other for other in list_datasets()
        if other != name and other not in related
        and dataset_info(other).shape == info.shape and dataset_info(other).num_levels == info.num_levels
    ]


@dataclass
class OODScore(Result):
    auroc: float  # P(s_OOD > s_in) + ½ P(tie); positive class = OOD
    fpr95: float  # fraction of in-distribution images flagged at the threshold that catches 95% of the OOD set
    num_in: int  # scores of the in-distribution side (images, or typicality batches)
    num_ood: int


@dataclass
class OODSet(Result):
    kind: str  # "transform" (of the test subset) or "dataset"
    num_images: int
    nll_bpd_mean: float  # mean NLL (or bound) of the OOD images, bits/dim
    png_bpd_mean: float  # mean PNG bits/dim of the OOD images
    scores: dict[str, OODScore]  # likelihood / typicality / complexity


@dataclass
class OODResult(Result):
    estimator: str  # what log_prob is (exact, ELBO, ...)
    positive_class: str
    num_in: int  # in-distribution images: the context's test subset
    images_sha1: str  # its index hash
    in_nll_bpd_mean: float
    in_png_bpd_mean: float
    entropy_bpd: float  # Ĥ: mean NLL of num_entropy images of entropy_split (typicality test), bits/dim
    entropy_split: str
    num_entropy: int
    typicality_batch: int  # M
    sets: dict[str, OODSet]
    skipped: dict[str, str]  # OOD sets not available here, with the reason


def detection_scores(in_set: dict, ood_set: dict, entropy_bpd: float, cfg: OODConfig) -> dict[str, OODScore]:
    """AUROC and FPR95 of each score for one (in-distribution, OOD) pair of per-image NLL/PNG arrays."""
    out = {}
    for score in SCORES:
        if score == "likelihood":
            s_in, s_ood = in_set["nll_bpd"], ood_set["nll_bpd"]
        elif score == "complexity":
            s_in, s_ood = in_set["nll_bpd"] - in_set["png_bpd"], ood_set["nll_bpd"] - ood_set["png_bpd"]
        else:
            s_in = typicality_scores(in_set["nll_bpd"], entropy_bpd, cfg.typicality_batch, cfg.seed)
            s_ood = typicality_scores(ood_set["nll_bpd"], entropy_bpd, cfg.typicality_batch, cfg.seed + 1)
        out[score] = OODScore(auroc(s_in, s_ood), fpr_at_tpr(s_in, s_ood), len(s_in), len(s_ood))
    return out


# ------------------------------------------------------------------------------------------------- evaluator
@register_evaluator("ood", config=OODConfig, result=OODResult)
def evaluate_ood(ctx, cfg: OODConfig) -> OODResult | None:
    """OOD detection by every score, against every available OOD set; None for families without a likelihood."""
    model = ctx.model
    if model.likelihood is Likelihood.NONE:
        return None
    info = ctx.dataset.info
    D = info.num_dims

    def score_images(x: torch.Tensor, log_p: torch.Tensor | None = None) -> dict:
        if log_p is None:
            log_p = batched(model.log_prob, x, cfg.batch_size, ctx.device)
        return {"nll_bpd": nats_to_bits_per_dim(-log_p.numpy(), D), "png_bpd": png_bits(x) / D}

    x_in = ctx.test_x  # the fixed test subset; its log-probs are shared with the likelihood evaluator
    in_set = score_images(x_in, ctx.test_log_prob(cfg.batch_size))
    x_ent = subsample(ctx.dataset.split(cfg.entropy_split).x, cfg.num_entropy, fixed_rng(cfg.seed, "entropy"))
    entropy_bpd = float(score_images(x_ent)["nll_bpd"].mean())

    candidates: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    if cfg.other_datasets:
        for other in same_shape_datasets(info.name):
            try:
                x_other = load_dataset(other, getattr(ctx.run, "data_root", None)).test.x
                candidates[other] = subsample(x_other, len(x_in), fixed_rng(cfg.seed, other))
            except DatasetUnavailable as err:
                skipped[other] = str(err)
    for name in cfg.transforms:
        candidates[name] = make_transform(name, x_in, info.num_levels, fixed_rng(cfg.seed, name))

    sets = {}
    for name, x_ood in candidates.items():
        ood = score_images(x_ood)
        sets[name] = OODSet(kind="transform" if name in TRANSFORMS else "dataset", num_images=len(x_ood),
                            nll_bpd_mean=float(np.mean(ood["nll_bpd"])), png_bpd_mean=float(np.mean(ood["png_bpd"])),
                            scores=detection_scores(in_set, ood, entropy_bpd, cfg))
    return OODResult(
        estimator=model.estimator, positive_class="ood", num_in=len(x_in), images_sha1=ctx.subset.indices_sha1,
        in_nll_bpd_mean=float(np.mean(in_set["nll_bpd"])), in_png_bpd_mean=float(np.mean(in_set["png_bpd"])),
        entropy_bpd=entropy_bpd, entropy_split=cfg.entropy_split, num_entropy=len(x_ent),
        typicality_batch=cfg.typicality_batch, sets=sets, skipped=skipped,
    )
