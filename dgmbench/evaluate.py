"""Evaluate a trained run: rebuild the model from its checkpoint, run every registered evaluator that applies,
write ``<run_dir>/metrics.json`` and log it to the run's MLflow run.

``metrics.json`` holds one section per evaluator (``likelihood``, ``sampling``, ...) plus ``run`` (who, what,
training record) and ``timing`` (wall-clock seconds; the only part that differs between identical reruns).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from . import checkpoint, identity
from .config import build_dataclass, run_from_dict
from .metrics import EvalContext, ordered_evaluators
from .runtime import seed_everything
from .tracking import Tracker, flatten, git_commit
from .train import build

log = logging.getLogger("dgmbench.evaluate")


def write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")
    os.replace(tmp, path)


def without_timing(metrics):
    """``metrics`` minus everything that measures wall-clock time: the ``timing`` section and every key ending
    in ``_seconds`` or ``_per_s`` (at any depth). Two runs of one config and seed agree on what is left (on CPU);
    the determinism and resume tests compare exactly this."""
    if isinstance(metrics, dict):
        return {k: without_timing(v) for k, v in metrics.items()
                if k != "timing" and not k.endswith(("_seconds", "_per_s"))}
    if isinstance(metrics, list):
        return [without_timing(v) for v in metrics]
    return metrics


def load_trained(run_dir: Path):
    """(run config, dataset, model in eval mode, device, training record) from ``run_dir/checkpoint.pt``."""
    ckpt = checkpoint.load(Path(run_dir) / "checkpoint.pt", "model")
    run = run_from_dict(ckpt["config"])
    identity.check_checkpoint(run_dir, run)  # the directory's own run, and no other writer
    dataset, model, device = build(run)
    checkpoint.load_state(model, ckpt["model_state"], Path(run_dir) / "checkpoint.pt")
    model.eval()
    return run, dataset, model, device, ckpt["record"]


def evaluate(run_dir: Path, *, only: list[str] | None = None, eval_config: dict | None = None) -> dict:
    """Evaluate ``run_dir``'s checkpoint. ``eval_config`` (evaluator name → Config, e.g. from a grid file) replaces
    the evaluation settings saved at training time, so a grid's current ``eval:`` section applies to runs trained
    before it changed; without it the checkpoint's settings are used."""
    run_dir = Path(run_dir)
    run, dataset, model, device, record = load_trained(run_dir)
    if eval_config is not None:
        run = dataclasses.replace(run, eval=dict(eval_config))
    metrics: dict = {
        "run": {
            "dataset": run.dataset,
            "model": run.label,  # the grid's name: the model, or its variant
            "base_model": run.model,
            "variant": run.variant,
            "seed": run.seed,
            "family": model.family,
            "likelihood": model.likelihood.value,
            "status": record["status"],
            "diverged_epoch": record["diverged_epoch"],
            "diverged_reason": record["diverged_reason"],
            "epochs_run": record["epochs_run"],
            "best_epoch": record["best_epoch"],
            "max_epochs": run.train.max_epochs,
            "num_params": sum(p.numel() for p in model.parameters()),
            "git_commit": git_commit(),
            "eval_settings": {name: dataclasses.asdict(cfg) for name, cfg in sorted(run.eval.items())},
        },
        "timing": {"train_seconds": record["train_seconds"]},
    }
    ctx = EvalContext(model=model, dataset=dataset, run=run, device=device, run_dir=run_dir, record=record, metrics=metrics)
    for ev in ordered_evaluators():
        if only and ev.name not in only:
            continue
        cfg = run.eval.get(ev.name) or build_dataclass(ev.Config, {}, where=f"eval.{ev.name}")
        seed_everything(run.seed)  # each evaluator sees the same RNG stream whatever ran before it
        t0 = time.perf_counter()
        section = ev.fn(ctx, cfg)
        metrics["timing"][f"{ev.name}_seconds"] = time.perf_counter() - t0
        if section is not None:
            metrics[ev.name] = section
            log.info("%s: %s done in %.1fs", run.run_name, ev.name, metrics["timing"][f"{ev.name}_seconds"])
    previous = run_dir / "metrics.json"
    if only and previous.exists():  # recompute some sections, keep the others
        try:
            old = json.loads(previous.read_text())
        except json.JSONDecodeError:
            old = {}
        metrics = {**old, **metrics, "timing": {**old.get("timing", {}), **metrics["timing"]}}
    write_json(metrics, previous)

    tracker = Tracker(run.tracking_uri, run.experiment)
    run_id = tracker.start_run(run_dir, run.run_name, flatten(run.to_dict()), {})
    numeric = {f"test.{k}": v for k, v in flatten({k: v for k, v in metrics.items() if k != "run"}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracker.log_metrics(run_id, numeric)
    tracker.log_artifact(run_id, run_dir / "metrics.json")
    tracker.set_tags(run_id, {"status": record["status"]})
    tracker.end_run(run_id, "FINISHED" if record["status"] == "ok" else "FAILED")
    return metrics
