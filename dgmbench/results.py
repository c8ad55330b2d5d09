"""A run's metrics.json as typed objects: what the tables read (never string keys into raw dicts).

``metrics.json`` holds ``run`` (who, what, the training record's summary, the evaluation settings used),
``test_subset`` (which test images every evaluator scored), one section per evaluator (its ``Result``) and
``timing`` (wall-clock seconds, the only part that differs between identical reruns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import EVALUATORS, Result, ResultError, TestSubset, parse_section

# Top-level keys of metrics.json that are not evaluator sections.
NON_SECTIONS = ("run", "test_subset", "timing")


@dataclass
class RunInfo(Result):
    dataset: str
    model: str  # the grid's name: the model, or its variant
    base_model: str  # the registered family
    variant: str | None
    seed: int
    family: str  # row label, e.g. "prescribed (VAE)"
    likelihood: str  # the family's declaration: exact | bound | none
    status: str  # ok | diverged | failed (a non-finite headline test metric, set by the tables: identity.py)
    diverged_epoch: int | None
    diverged_reason: str | None
    epochs_run: int | None
    best_epoch: int | None
    max_epochs: int
    num_params: int
    git_commit: str
    evaluation_index: int  # 0 for the first evaluation of this run directory, +1 for each re-evaluation
    evaluated: dict[str, bool]  # evaluator → it ran and applied (True) / ran and did not apply (False)
    eval_settings: dict[str, dict[str, Any]]  # evaluator → the settings it ran with
    failed_reason: str | None = None  # why a run that trained ok counts as failed (set by the tables)


@dataclass
class RunRecord:
    """One run: its info, its test subset, its typed results by evaluator name, and where it lives."""

    info: RunInfo
    subset: TestSubset
    results: dict[str, Result]
    timing: dict[str, float] = field(default_factory=dict)
    dir: Path | None = None

    @classmethod
    def from_dict(cls, metrics: dict, where: Path | None = None) -> "RunRecord":
        """Parse a metrics.json dict; a section that does not match its evaluator's Result raises ResultError."""
        if not isinstance(metrics, dict) or "run" not in metrics or "test_subset" not in metrics:
            raise ResultError("not a dgmbench metrics.json (no 'run' or 'test_subset' section); rerun "
                              "`dgmbench evaluate` on that run")
        results = {}
        for name, data in metrics.items():
            if name in NON_SECTIONS:
                continue
            if name not in EVALUATORS:
                raise ResultError(f"unknown section {name!r} (valid: {', '.join(EVALUATORS.names())})")
            results[name] = parse_section(name, data)
        return cls(info=RunInfo.from_dict(metrics["run"], where="run"),
                   subset=TestSubset.from_dict(metrics["test_subset"], where="test_subset"),
                   results=results, timing=dict(metrics.get("timing", {})), dir=where)

    def get(self, name: str) -> Result | None:
        """The result of evaluator ``name``, or None when it did not apply or did not run."""
        return self.results.get(name)
