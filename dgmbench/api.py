"""The Python API: load a trained run, and score your own models and samples with the suite's own metrics.

    import dgmbench
    run = dgmbench.load_run("results/runs/digits/vae/seed0")    # the model, in eval mode, on the CPU
    x = dgmbench.test_images(run.dataset)                       # (N, C, H, W) int64 levels
    dgmbench.nll(run.model, x)                                  # test NLL in nats and bits/dim, with its s.e.
    dgmbench.iwae(run.model, x, k=100)                          # the IWAE-k bound of a VAE
    dgmbench.sample_quality(run.model.sample(447), run.dataset) # Fréchet distance, precision, recall

Nothing here has a formula of its own: each function calls the code the evaluators run (``dgmbench.metrics``), so
a number computed here is the benchmark's number for the same model, images and settings. docs/python-api.md is
the walk-through. ``import dgmbench`` does not import this module (nor torch); the first ``dgmbench.load_run``
(or any name below) does.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .config import ConfigError, RunConfig, build_dataclass
from .data import Dataset, DatasetInfo, load_dataset
from .distributions import nats_to_bits_per_dim
from .evaluate import load_trained
from .metrics import Result, TestSubset, TestSubsetConfig, batched
from .metrics.compression import code_autoregressive, code_discrete_latent, no_coder_reason
from .metrics.fidelity import SampleQualityConfig, SampleQualityResult, score_samples
from .metrics.likelihood import importance_weighted, nll_summary, repeats_method
from .models.base import GenerativeModel, Likelihood

__all__ = ["LoadedRun", "load_run", "test_images", "nll", "iwae", "NLLEstimate", "sample_quality",
           "SampleQualityResult", "code_length", "CodeLength"]


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class LoadedRun:
    """A trained run: its model and what you need to know about it."""

    model: GenerativeModel  # in eval mode, on `device`: log_prob / sample / embed / ... as its class declares
    dataset: Dataset  # the data it was trained on: .info and the fixed train / val / test splits
    config: RunConfig  # the resolved training config saved in its checkpoint (as trained, device included)
    record: dict  # the training record: status, epochs_run, best_epoch, train_seconds, curve, ...
    device: torch.device  # where the model is
    dir: Path  # the run directory

    @property
    def info(self) -> DatasetInfo:
        """The data's shape (C, H, W), number of levels L, classes and name."""
        return self.dataset.info

    def metrics(self) -> dict | None:
        """The run's ``metrics.json`` (what ``dgmbench evaluate`` wrote), or None before its first evaluation."""
        path = self.dir / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    """Load the trained model of a run directory (what ``dgmbench train --out DIR`` wrote).

    Args:
        path: the run directory, or its ``checkpoint.pt``.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present).
    Returns:
        A :class:`LoadedRun`: the model in eval mode on ``device``, its dataset, config and training record.
    Raises:
        CheckpointError / IdentityError / ConfigError / DeviceUnavailable, with a one-line message naming the fix,
        for a missing or foreign directory, a corrupt checkpoint, or an unavailable device.

    It reads the checkpoint as ``dgmbench evaluate`` does (the same function), but as a reader: it takes no lock
    on the directory and leaves this process's thread count alone.
    """
    run_dir = Path(path)
    if run_dir.is_file():
        if run_dir.name != "checkpoint.pt":
            raise CheckpointError(f"{run_dir} is a file, not a run directory; pass the directory that "
                                  f"`dgmbench train --out DIR` wrote (the one holding checkpoint.pt)")
        run_dir = run_dir.parent
    run, dataset, model, where, record = load_trained(run_dir, device=device, job=False)
    return LoadedRun(model=model, dataset=dataset, config=run, record=record, device=where, dir=run_dir)


def _dataset(dataset: str | Dataset | LoadedRun) -> Dataset:
    if isinstance(dataset, LoadedRun):
        return dataset.dataset
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset)


def _test_subset(ds: Dataset, max_images: int, seed: int) -> tuple[torch.Tensor, TestSubset]:
    cfg = build_dataclass(TestSubsetConfig, {"max_images": max_images, "seed": seed}, where="test_subset")
    subset, idx = TestSubset.choose(len(ds.test.x), cfg)
    return ds.test.x[idx], subset


def test_images(dataset: str | Dataset | LoadedRun = "digits", max_images: int = 0, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) int64 test images of ``dataset`` (a name, a Dataset or a LoadedRun): the whole test split, or
    the fixed subset the evaluators score under ``eval.test_subset: {max_images, seed}``."""
    return _test_subset(_dataset(dataset), max_images, seed)[0].long()


test_images.__test__ = False  # a library function, not a pytest test


# ------------------------------------------------------------------------------------------ likelihood
@dataclass
class NLLEstimate(Result):
    """A negative log-likelihood (or the negative of a bound on it) averaged over images, with its uncertainty."""

    estimator: str  # what was averaged: the model's own (exact, ELBO, dequantised bound, VLB, ...) or IWAE-k
    nll_nats: float  # mean over the images of −log p(x), or of −(the bound), nats/image
    nll_bpd: float  # the same in bits/dim: nats / (D ln 2)
    stderr_nats: float | None  # s.e. from the estimator's own randomness: 0 if exact, None for 1 repeat of a bound
    repeats: int  # independent repeats behind stderr_nats
    sem_images_nats: float  # standard error of the mean over the images
    num_images: int  # N
    num_dims: int  # D
    stderr_method: str | None = None  # deterministic, R repeats, or the jackknife over one draw's k samples


@contextlib.contextmanager
def _evaluating(model: GenerativeModel):
    """The model in eval mode for the block (as the evaluators see it), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_images(x, what: str = "images") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a non-empty (N, C, H, W) tensor of integer levels, got {shape}")
    return x


def _estimate(per_image: torch.Tensor, stochastic: bool, estimator: str, num_dims: int) -> NLLEstimate:
    mean, stderr, sem = nll_summary(per_image, stochastic)  # the likelihood evaluator's statistics
    return NLLEstimate(estimator=estimator, nll_nats=mean, nll_bpd=float(nats_to_bits_per_dim(mean, num_dims)),
                       stderr_nats=stderr, repeats=per_image.shape[0], sem_images_nats=sem,
                       num_images=per_image.shape[1], num_dims=num_dims,
                       stderr_method=repeats_method(per_image.shape[0], stderr, stochastic))


def nll(model: GenerativeModel, x: torch.Tensor, *, repeats: int = 2, batch_size: int = 256) -> NLLEstimate:
    """Test NLL of ``x`` under ``model.log_prob``: exact, or the model's own bound (ELBO, VLB, ...).

    Args:
        model: any model whose ``likelihood`` is exact or bound (a loaded run's, or your own).
        x: (N, C, H, W) integer levels of the model's data.
        repeats: independent repeats of a stochastic bound, for its standard error (an exact one is computed once).
        batch_size: images per ``log_prob`` call.
    Returns:
        :class:`NLLEstimate`, computed as the ``likelihood`` evaluator computes its ``bound_nats``.
    """
    x = _check_images(x)
    if model.likelihood is Likelihood.NONE:
        raise TypeError(f"model {model.name!r} has no likelihood (likelihood = none): nll does not apply")
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    stochastic = model.likelihood is Likelihood.BOUND
    with _evaluating(model):
        per_image = torch.stack([batched(model.log_prob, x, batch_size, model.device)
                                 for _ in range(repeats if stochastic else 1)])  # (R, N)
    return _estimate(per_image, stochastic, model.estimator, model.info.num_dims)


def iwae(model: GenerativeModel, x: torch.Tensor, k: int, *, repeats: int = 1, batch_size: int = 256) -> NLLEstimate:
    """The importance-weighted bound with ``k`` samples (IWAE-k of a VAE, Burda et al. 2016; the IW-VLB of
    diffusion) of a ``supports_iwae`` model, averaged over ``x``, computed as the ``likelihood`` evaluator computes
    it: one draw with its standard error by the jackknife over the k samples (``repeats`` = 1, for families that
    give their weights), or ``repeats`` independent draws and the s.e. from their spread.

    log p(x) ≥ IWAE-k ≥ IWAE-1 = ELBO in expectation, and IWAE-k does not decrease with k: ``nll_nats`` here is at
    most ``nll(model, x).nll_nats`` up to the standard errors, and falls towards −log p(x) as k grows.
    """
    x = _check_images(x)
    if not model.supports_iwae:
        raise TypeError(f"model {model.name!r} has no importance-weighted bound (supports_iwae = False); "
                        f"use nll(model, x)")
    if k < 1 or repeats < 1:
        raise ValueError(f"k and repeats must be ≥ 1, got k={k}, repeats={repeats}")
    with _evaluating(model):
        mean, stderr, sem, draws, method = importance_weighted(model, x, k, repeats, batch_size, model.device)
    return NLLEstimate(estimator=f"{getattr(model, 'iwae_estimator', 'IWAE')}-{k}", nll_nats=mean,
                       nll_bpd=float(nats_to_bits_per_dim(mean, model.info.num_dims)), stderr_nats=stderr,
                       repeats=draws, sem_images_nats=sem, num_images=len(x), num_dims=model.info.num_dims,
                       stderr_method=method)


# ------------------------------------------------------------------------------------- lossless coding
@dataclass
class CodeLength(Result):
    """A real lossless code of images: the length of an ANS bitstream driven by the model, decoded and checked."""

    coder: str  # how the bitstream was made
    coded_bits: int  # length of the bitstream(s), whole 32-bit words
    coded_bpd: float  # coded_bits / (N D)
    ideal_bpd: float  # −Σ log₂ p(x) / (N D) of the same probabilities: the NLL the code should approach
    round_trip_exact: bool  # the decoded images equal the originals
    verified_images: int  # how many were decoded (D network passes each)
    num_images: int  # N
    num_dims: int  # D


def code_length(model: GenerativeModel, x: torch.Tensor, *, batch_size: int = 512,
                verify_images: int = 128) -> CodeLength:
    """Encode ``x`` losslessly with ``model`` as the ``compression`` evaluator does: an ``autoregressive`` model's
    conditionals or a ``discrete_latent`` model's bijection and prior drive an ANS coder; the first
    ``verify_images`` images (0 = all) are decoded and compared. Other families raise TypeError with the reason."""
    x = _check_images(x).long().cpu()
    with _evaluating(model):
        if model.autoregressive:
            res, coder = code_autoregressive(model, x, batch_size, verify_images), "ANS, the model's conditionals"
        elif model.discrete_latent:
            res, coder = (code_discrete_latent(model, x, batch_size, verify_images),
                          "ANS of z = f(x) with the prior's tables; x = f⁻¹(z)")
        else:
            raise TypeError(f"model {model.name!r} gets no lossless code here: {no_coder_reason(model)[1]}")
    N, D = len(x), model.info.num_dims
    return CodeLength(coder=coder, coded_bits=int(res["coded_bits"]), coded_bpd=res["coded_bits"] / (N * D),
                      ideal_bpd=res["ideal_bits"] / (N * D), round_trip_exact=bool(res["round_trip_exact"]),
                      verified_images=int(res["verified_images"]), num_images=N, num_dims=D)


# -------------------------------------------------------------------------------------- sample quality
_NOT_SETTINGS = ("num_samples", "sample_batch_size")  # the evaluator's settings for drawing samples: yours are given


def sample_quality(samples: torch.Tensor, dataset: str | Dataset | LoadedRun = "digits", *, max_images: int = 0,
                   subset_seed: int = 0, seed: int = 0, **settings) -> SampleQualityResult:
    """Fréchet distance and k-NN precision/recall of ``samples`` against ``dataset``'s test images, in the feature
    space of the classifier the ``sample_quality`` evaluator trains on the dataset (dgmbench/metrics/fidelity.py).

    Args:
        samples: (N, C, H, W) integer levels 0..L−1 of the dataset's shape, N > k (e.g. ``model.sample(447)``).
        dataset: a dataset name, a Dataset, or a LoadedRun (its dataset).
        max_images, subset_seed: compare with the fixed test subset ``eval.test_subset: {max_images, seed}``
            (default: the whole test split, as the default grid does).
        seed: seed of the FD's bootstrap.
        settings: the evaluator's settings (``eval.sample_quality`` in a grid): k, bootstrap, reference_split,
            classifier_steps, classifier_width, feature_dim, classifier_seed, cache_dir (where the classifier is
            cached, default ``results/cache``: the benchmark's own when run from the repository), inception_fid.
    Returns:
        The evaluator's :class:`SampleQualityResult`: ``fd`` with its bootstrap ``fd_stderr``, ``precision``,
        ``recall``, and ``data_*``, the same metrics for N real training images (the finite-N floor a perfect
        model reaches, not 0), with the protocol (classifier accuracy, images compared).
    """
    ds = _dataset(dataset)
    given = sorted(set(settings) & set(_NOT_SETTINGS))
    if given:
        raise ConfigError(f"sample_quality: {given[0]} is how the evaluator draws samples; here the samples you pass "
                          f"are scored, all of them: leave it out")
    cfg = build_dataclass(SampleQualityConfig, settings, where="sample_quality")
    info = ds.info
    samples = _check_images(samples, "samples")
    if samples.is_floating_point() or tuple(samples.shape[1:]) != info.shape:
        raise ValueError(f"samples must be integer levels of shape (N, {', '.join(map(str, info.shape))}) for "
                         f"{info.name}, got {samples.dtype} {tuple(samples.shape)}")
    if int(samples.min()) < 0 or int(samples.max()) >= info.num_levels:
        raise ValueError(f"samples must hold the levels 0..{info.num_levels - 1} of {info.name}, found values "
                         f"{int(samples.min())}..{int(samples.max())}; map your images to the dataset's levels")
    if len(samples) <= max(cfg.k, 1):
        raise ValueError(f"need more than k = {cfg.k} samples (and at least 2) for precision/recall and a "
                         f"covariance, got {len(samples)}")
    real, subset = _test_subset(ds, max_images, subset_seed)
    if cfg.reference_split != "test":
        real = ds.split(cfg.reference_split).x
    return score_samples(samples.long().cpu(), real, ds, cfg, reference_sha1=subset.indices_sha1, seed=seed)

