"""Evaluators: each computes one section of a run's ``metrics.json``.

An evaluator is a function ``fn(ctx, cfg) -> dict | None`` registered with :func:`register_evaluator` under the
section name it writes, with a ``Config`` dataclass of its settings (configurable under ``eval.<name>`` in a grid
file). It returns ``None`` when it does not apply to the model (it reads the model's declared capabilities,
e.g. ``model.likelihood`` or ``model.can_sample``). ``dgmbench evaluate`` runs them in ``order``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..registry import Registry


@dataclass
class EvalContext:
    model: Any  # GenerativeModel, in eval mode, on `device`
    dataset: Any  # dgmbench.data.Dataset
    run: Any  # dgmbench.config.RunConfig
    device: torch.device
    run_dir: Path
    record: dict  # the checkpoint's training record (epochs, status, curve, ...)
    metrics: dict  # sections computed so far, so later evaluators can use earlier ones


@dataclass(frozen=True)
class Evaluator:
    name: str
    fn: Callable[[EvalContext, Any], dict | None]
    Config: type
    order: int


EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(name: str, *, config: type | None = None, order: int = 50):
    def decorator(fn):
        cfg_cls = config or dataclasses.make_dataclass(f"{name.title()}Config", [])
        EVALUATORS.register(name)(Evaluator(name, fn, cfg_cls, order))
        return fn

    return decorator


def ordered_evaluators() -> list[Evaluator]:
    return sorted((EVALUATORS.get(n) for n in EVALUATORS.names()), key=lambda e: (e.order, e.name))


# Importing the modules registers their evaluators.
from . import likelihood  # noqa: E402,F401
from . import ood  # noqa: E402,F401
from . import fidelity  # noqa: E402,F401
from . import probe  # noqa: E402,F401
from . import compression, sampling, stability  # noqa: E402,F401
