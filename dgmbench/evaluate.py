"""Evaluate a trained run: rebuild the model from its checkpoint, run the evaluators that apply in the order
their dependencies give (``metrics.plan``), write ``<run_dir>/metrics.json`` and log it to the run's MLflow run.

``metrics.json`` holds ``run`` (who, what, training record, the evaluation settings used), ``test_subset`` (the
fixed test images every evaluator scored), one section per evaluator (its typed ``Result``) and ``timing``
(the only part that differs between identical reruns): ``train_seconds`` and ``<evaluator>_seconds`` (wall), and
the typed records (:class:`~dgmbench.metrics.timing.EvaluationTiming`): per evaluator its wall and CPU seconds,
threads and load average, the process's start-up, and the machine.

``only``: recompute those sections; what they require is reused from the previous metrics.json when it is there
and parses (else recomputed too); every other section already there is kept, never erased.

**Evaluated in the training process** (``pending_key``): the workflow's train job evaluates the run it has just
trained and leaves ``metrics.pending.json`` for its evaluate job to adopt (dgmbench/pending.py says when it may).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from . import checkpoint, clock, identity
from .build import build
from .config import ConfigError, eval_settings, run_from_dict
from .pending import PENDING, write_json
from .metrics import EvalContext, ResultError, TestSubset, parse_section, plan
from .results import RunInfo
from .runtime import seed_everything
from .journal import open_tracker
from .tracking import flatten, git_commit

log = logging.getLogger("dgmbench.evaluate")


def without_timing(metrics):
    """``metrics`` minus everything that measures time: every key named ``timing`` (the section, and the training's
    and the sampling's timing records, with their CPU seconds and load averages) and every key ending in
    ``_seconds`` or ``_per_s``, at any depth. Two runs of one config and seed agree on what is left (on CPU);
    the determinism and resume tests compare exactly this."""
    if isinstance(metrics, dict):
        return {k: without_timing(v) for k, v in metrics.items()
                if k != "timing" and not k.endswith(("_seconds", "_per_s"))}
    if isinstance(metrics, list):
        return [without_timing(v) for v in metrics]
    return metrics


def load_trained(run_dir: Path, *, device: str | None = None, job: bool = True):
    """(run config, dataset, model in eval mode, device, training record) from ``run_dir/checkpoint.pt``.

    ``device`` (auto, cpu, cuda, cuda:N) replaces the run's own. ``job``: an evaluate job, which writes into the
    directory, holds its writer lock and sets the run's thread count; ``job=False`` (``dgmbench.load_run``) only
    reads: no lock, the caller's threads left alone."""
    ckpt = checkpoint.load(Path(run_dir) / "checkpoint.pt", "model")
    run = run_from_dict(ckpt["config"])
    identity.check_checkpoint(run_dir, run, writer=job)  # the directory's own run, and no other writer
    placed = run if device is None else run_from_dict({**ckpt["config"], "device": device})  # validates the name
    dataset, model, device = build(placed, threads=job)
    checkpoint.load_state(model, ckpt["model_state"], Path(run_dir) / "checkpoint.pt")
    model.eval()
    return run, dataset, model, device, ckpt["record"]


def _previous(path: Path) -> dict:
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}
    return old if isinstance(old, dict) else {}


def evaluate(run_dir: Path, *, only: list[str] | None = None, eval_config: dict | None = None,
             progress: Callable[[str], None] | None = None, pending_key: dict | None = None,
             in_training_process: bool = False, journal: bool = False) -> dict:
    """Evaluate ``run_dir``'s checkpoint with ``eval_config`` (name → Config, from :func:`config.eval_settings`;
    the defaults when None) and return the metrics dict written to ``run_dir/metrics.json``. ``progress`` receives
    one line per evaluator (name, result, seconds). With ``pending_key`` (:func:`pending_key`; the training
    process), the metrics go to ``run_dir/metrics.pending.json`` with that key instead, for :func:`adopt_pending`.
    ``in_training_process`` (implied by ``pending_key``): the start-up recorded is the evaluation's own, from this
    call to the first evaluator, not the process's (which trained first). ``journal``: log to the run's MLflow
    journal for ``dgmbench track`` instead of the store (dgmbench/journal.py)."""
    in_training_process = in_training_process or pending_key is not None
    entered = clock.Stopwatch().start()  # in the training process, the evaluation's start-up begins here
    run_dir = Path(run_dir)
    settings = eval_config or eval_settings(None)
    run, dataset, model, device, record = load_trained(run_dir)
    subset, idx = TestSubset.choose(len(dataset.test.x), settings["test_subset"])
    path = run_dir / "metrics.json"
    # A pending evaluation is one the evaluate job would make after Snakemake deleted metrics.json: no previous one.
    previous = _previous(path) if pending_key is None else {}
    if only and previous.get("test_subset", subset.to_dict()) != subset.to_dict():
        raise ConfigError(f"{path} was computed on another test subset ({previous['test_subset']}) than "
                          f"eval.test_subset selects now ({subset.to_dict()}); evaluate without --only")
    ctx = EvalContext(model=model, dataset=dataset, run=run, device=device, run_dir=run_dir, record=record,
                      subset=subset, test_x=dataset.test.x[idx])
    timing = {"train_seconds": record["train_seconds"]}
    evaluator_timing = {}  # name → clock record: wall and CPU seconds, threads, load average
    # This process from its start to its first evaluator; in the training process, from this call's start.
    startup = entered.stop().record() if in_training_process else clock.startup_record()
    computed = {}
    evaluated = dict(previous.get("run", {}).get("evaluated", {})) if only else {}
    evaluators = plan(only)
    for i, ev in enumerate(evaluators, 1):
        if only and ev.name not in only and ev.name in previous:
            try:  # a dependency of a requested section, already computed on the same images
                ctx.results[ev.name] = parse_section(ev.name, previous[ev.name])
                continue
            except ResultError:
                pass  # written by another version: recompute it
        seed_everything(run.seed)  # each evaluator sees the same RNG stream whatever ran before it
        with clock.Stopwatch() as watch:
            result = ev.fn(ctx, settings[ev.name])
        evaluator_timing[ev.name] = watch.record()
        timing[f"{ev.name}_seconds"] = watch.wall_seconds
        line = (f"{run.run_name}: [{i}/{len(evaluators)}] {ev.name} "
                f"{'done' if result is not None else 'does not apply'} in {timing[f'{ev.name}_seconds']:.1f} s")
        log.info(line)
        if progress is not None:
            progress(line)
        evaluated[ev.name] = result is not None
        if result is not None:
            ctx.results[ev.name] = computed[ev.name] = result
    info = RunInfo(
        dataset=run.dataset, model=run.label, base_model=run.model, variant=run.variant, seed=run.seed,
        family=model.family, likelihood=model.likelihood.value, status=record["status"],
        diverged_epoch=record["diverged_epoch"], diverged_reason=record["diverged_reason"],
        epochs_run=record["epochs_run"], best_epoch=record["best_epoch"], max_epochs=run.train.max_epochs,
        num_params=sum(p.numel() for p in model.parameters()), git_commit=git_commit(),
        evaluation_index=previous.get("run", {}).get("evaluation_index", -1) + 1 if previous else 0,
        evaluated=dict(sorted(evaluated.items())),
        eval_settings={name: asdict(cfg) for name, cfg in sorted(settings.items())},
    )
    kept = {k: v for k, v in previous.items() if k not in ("run", "test_subset", "timing")} if only else {}
    metrics = {"run": info.to_dict(), "test_subset": subset.to_dict(), **kept,
               **{name: res.to_dict() for name, res in computed.items()},
               "timing": merge_timing(previous.get("timing", {}) if only else {}, timing, evaluator_timing,
                                      startup, clock.machine(str(device)))}
    if in_training_process:
        metrics["timing"]["in_training_process"] = True
    if pending_key is not None:
        write_json({"key": pending_key, "metrics": metrics}, run_dir / PENDING)
        with tempfile.TemporaryDirectory(prefix="dgmbench-metrics-") as tmp:  # the artifact is metrics.json
            write_json(metrics, Path(tmp) / "metrics.json")
            log_to_mlflow(run, run_dir, metrics, record["status"], artifact=Path(tmp) / "metrics.json",
                          journal=journal)
    else:
        write_json(metrics, path)
        log_to_mlflow(run, run_dir, metrics, record["status"], journal=journal)
    return metrics


def merge_timing(previous: dict, flat: dict, evaluators: dict, startup: dict, machine: str) -> dict:
    """The ``timing`` section: the previous one's entries (kept by ``--only``) updated with this evaluation's."""
    return {**previous, **flat, "evaluators": {**previous.get("evaluators", {}), **evaluators},
            "startup": startup, "machine": machine}


def log_to_mlflow(run, run_dir: Path, metrics: dict, status: str, artifact: Path | None = None,
                  journal: bool = False) -> None:
    """The evaluation's headline numbers (``tracking.HEADLINE_METRICS``, read from the typed results) at step = the
    evaluation index (one value per evaluation); metrics.json itself, everything else included, as the artifact;
    the settings it used as tags (a re-evaluation overwrites them; params are immutable in MLflow and hold the
    training config)."""
    from .results import NON_SECTIONS
    from .tracking import headline_metrics

    results = {}
    for name, section in metrics.items():
        if name in NON_SECTIONS:
            continue
        try:
            results[name] = parse_section(name, section)
        except (ResultError, KeyError):  # kept by --only from another version or a plugin not installed now
            pass  # it stays in the metrics.json artifact
    tracker = open_tracker(run.tracking_uri, run.experiment, journal=journal)
    run_id = tracker.start_run(run_dir, run.run_name, flatten(run.to_dict()), {})
    step = metrics["run"]["evaluation_index"]
    tracker.log_metrics(run_id, headline_metrics(results), step=step)
    tracker.set_tags(run_id, {**{f"eval.{k}": v for k, v in flatten(metrics["run"]["eval_settings"]).items()},
                              "eval.test_subset_sha1": metrics["test_subset"]["indices_sha1"],
                              "evaluation_index": step, "status": status})
    tracker.log_artifact(run_id, artifact or run_dir / "metrics.json")
    tracker.end_run(run_id, "FINISHED" if status == "ok" else "FAILED")
