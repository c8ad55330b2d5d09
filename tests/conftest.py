"""Shared fixtures. Tests run on the CPU with one thread each (CI has 2 cores)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from dgmbench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def isolated_cwd(tmp_path, monkeypatch):
    """Run in a fresh directory, so the default MLflow store (./mlflow/mlflow.db) is the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def small_info(shape=(1, 4, 4), num_levels=3, name="tiny"):
    from dgmbench.data import DatasetInfo

    return DatasetInfo(name, shape, num_levels, 2, "test images")


@pytest.fixture
def float64():
    """float64 as the default dtype for one test (exactness checks: invertibility, log-dets, Σp = 1)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# The smallest training and evaluation that still run every evaluator (each writes its metrics.json section).
# The scale-out tests (test_parallel.py, test_slurm.py) run grids of these.
TINY_TRAIN = {"max_epochs": 2, "num_train": 48, "num_val": 32, "batch_size": 16, "patience": 0}
TINY_EVAL = {
    "likelihood": {"iwae_k": 2, "iwae_repeats": 1},
    "normalisation": {"spaces": [[1, 2, 2, 3]], "bound_repeats": 1, "iwae_k": 2},
    "sampling": {"batch_sizes": [1, 4], "repeats": 1, "measure_seconds": 0.01, "max_call_seconds": 0.5,
                 "probe_sizes": [8], "probe_batch_sizes": [1], "probe_seconds": 0.01, "identity_check_samples": 2},
    "compression": {"max_images": 8, "verify_images": 2},
    "lossy": {"jpeg_qualities": [50]},
    "sample_quality": {"num_samples": 32, "classifier_steps": 10, "classifier_width": 4, "feature_dim": 8},
    "probe": {"c_grid": [1.0], "labels_per_class": 2, "cv_folds": 2, "num_train": 64, "max_iter": 20},
    "ood": {"max_images": 32, "num_entropy": 32},
}
