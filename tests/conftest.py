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
