"""Seeds, devices and threads: set once, at the edges (CLI, trainer), never inside model code."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine; the message says what to use instead."""


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} requested but CUDA is not available here; use device: auto or cpu "
                                "(--set device=cpu)")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Torch intra-op threads for this process (one Snakemake job = ``threads`` cores, no oversubscription)."""
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # numpy/scipy's BLAS was loaded before this runs, so OMP_NUM_THREADS no longer reaches it; limit it directly
    # (without this, scikit-learn's solvers in two parallel jobs on two cores ran ~100× slower).
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so checkpoints load with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
