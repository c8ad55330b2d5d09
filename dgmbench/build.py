"""Build what a resolved run needs — the dataset, the model on its device — for training and evaluation alike
(neither imports the other)."""

from __future__ import annotations

from dataclasses import asdict

from .config import RunConfig
from .data import load_dataset
from .models import get_model
from .runtime import resolve_device, set_threads


def build(run: RunConfig, *, threads: bool = True):
    """(dataset, model on its device, device) for a resolved run. ``threads``: set this process's thread count to
    the run's (a dgmbench job); False leaves it as it is (a library caller's process, ``dgmbench.load_run``)."""
    if threads:
        set_threads(run.threads)
    device = resolve_device(run.device)
    dataset = load_dataset(run.dataset, run.data_root)
    model = get_model(run.model, dataset.info, **asdict(run.hparams)).to(device)
    return dataset, model, device
