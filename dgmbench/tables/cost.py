"""``results/tables/cost.{csv,md}``: what each family's numbers cost, and ``figures/anytime_<dataset>.png``.

One row per (dataset, model), the mean ± sd over its seeds of: parameters; FLOPs per training step (counted once
per run by torch's FlopCounterMode on one training batch); the training's wall and CPU seconds and the counted
FLOPs it sustained; each evaluator's wall seconds and the evaluation's CPU seconds; the start-up of the training
and of the evaluation job; and the best *validation* NLL reached within 25 %, 50 % and 100 % of the epochs run —
what the run would have scored with a smaller budget (issue #19: a budget is earned by its validation curve).

A note per dataset sums the grid's training and evaluation CPU seconds and divides them by the cores of the machine
that ran it: the wall time the grid cannot go under at its budgets, whatever its start-up and scheduling.

The anytime figure plots each run's validation NLL (bits/dim) against its cumulative training wall time.

Everything is read from the typed results (``TrainingResult`` and its ``TrainingTiming``, the ``timing`` section as
:class:`~dgmbench.metrics.timing.EvaluationTiming`, ``SamplingResult.timing``); a run written before a quantity
was recorded shows "not measured" in that column.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
from matplotlib.ticker import FuncFormatter

from ..metrics import EVALUATORS
from ..metrics.timing import EvaluationTiming, Timing
from . import NOT_MEASURED, fmt_mean_sd, group_runs, mean_sd, register_table, write_table
from .matrix import ROW_ORDER
from .plots import _save, plt  # the Agg backend (imported first) and the one save routine of the figures

DOES_NOT_APPLY = "—"
FRACTIONS = (0.25, 0.5, 1.0)  # of the epochs run: the budgets the NLL columns report


def _cell(values, digits: int | None = None) -> str:
    """mean ± sd over the seeds that measured it, with ``digits`` decimals (None: three significant digits of the
    mean, at most three decimals); "not measured" when no seed did."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return NOT_MEASURED
    if digits is None:
        m = abs(sum(vals) / len(vals))
        digits = min(3, max(0, 2 - math.floor(math.log10(m)))) if m > 0 else 0
    return fmt_mean_sd(vals, digits)


def _flops(trainings) -> str:
    """The mean FLOPs per step in three significant digits, with the batch it was counted on ("2.41e+07 (batch 64)")."""
    m, _, n = mean_sd(t.flops_per_step for t in trainings if t.flops_per_step is not None)
    batch = {t.batch_size for t in trainings if t.flops_per_step is not None}
    return f"{m:.3g}" + (f" (batch {batch.pop()})" if len(batch) == 1 else "") if n else NOT_MEASURED


def _eval_timing(run) -> EvaluationTiming:
    return EvaluationTiming.from_section(run.timing)


def _eval_cpu(timing: EvaluationTiming) -> float | None:
    """CPU seconds of every evaluator of one evaluation together; None if one of them lacks its CPU seconds."""
    cpu = [t.cpu_seconds for t in timing.evaluators.values()]
    return None if None in cpu else sum(cpu)


def _gflops_per_s(training) -> float | None:
    """Counted FLOPs the training sustained: FLOPs per step × steps / training wall seconds, in GFLOP/s."""
    t = training.timing.training if training.timing else None
    if training.flops_per_step is None or training.steps_run is None or t is None or not t.wall_seconds:
        return None
    return training.flops_per_step * training.steps_run / t.wall_seconds / 1e9


def _row(dataset: str, model: str, group: list, evaluators: list[str]) -> dict:
    trainings = [r.get("training") for r in group if r.get("training") is not None]
    timed = [t.timing for t in trainings if t.timing is not None]
    evals = [_eval_timing(r) for r in group]
    ok = [r.get("training") for r in group if r.info.status == "ok" and r.get("training") is not None]
    row = {
        "dataset": dataset, "model": model, "seeds": len(group),
        "parameters": f"{round(mean_sd(r.info.num_params for r in group)[0]):,}",
        "FLOPs/step": _flops(trainings),
        "epochs run": _cell([r.info.epochs_run for r in group], 0),
        "train wall s": _cell([e.train_seconds for e in evals]),  # files of every version have it
        "train CPU s": _cell([t.training.cpu_seconds for t in timed]),
        "train GFLOP/s (counted)": _cell([_gflops_per_s(t) for t in trainings]),
        "start-up s, train job": _cell([t.startup.wall_seconds for t in timed if t.startup]),
        "eval wall s (all)": _cell([sum(t.wall_seconds for t in e.evaluators.values()) for e in evals
                                    if e.evaluators]),
        "eval CPU s (all)": _cell([_eval_cpu(e) for e in evals if e.evaluators]),
        "start-up s, eval job": _cell([e.startup.wall_seconds for e in evals if e.startup]),
    }
    for name in evaluators:  # the runs it applied to (one that does not apply returns at once: "—")
        applied = [e.evaluators[name].wall_seconds for r, e in zip(group, evals)
                   if name in e.evaluators and r.info.evaluated.get(name)]
        ran = any(name in e.evaluators for e in evals)
        row[f"eval s: {name}"] = _cell(applied) if applied or not ran else DOES_NOT_APPLY
    lik = [r.get("likelihood") for r in group if r.info.status == "ok" and r.get("likelihood") is not None]
    dims = lik[0].num_dims if lik else None  # converts the nats of results written before val_bpd existed
    for f in FRACTIONS:
        row[f"best val NLL ≤{f:.0%} epochs (bits/dim)"] = _cell([t.best_val_bpd_within(f, dims) for t in ok], 3)
    row["test NLL (bits/dim)"] = _cell([x.nll_bpd for x in lik], 3)
    return row


def _sampling_notes(runs) -> list[str]:
    """How many timed calls stand behind the samples/s figures, and every measurement the skip rule left out."""
    measured, skipped = [], []
    for r in runs:
        s = r.get("sampling")
        for m in (s.timing if s is not None else []):
            if m.skipped:
                skipped.append(f"{r.info.dataset}/{r.info.model}/seed{r.info.seed} {m.sampler} batch {m.batch_size} "
                               f"({m.skipped})")
            else:
                measured.append(len(m.call_seconds))
    notes = []
    if measured:
        notes.append(f"Sampling speed (speed table): each samples/s figure is the batch size over the median of "
                     f"{min(measured)}{f'–{max(measured)}' if max(measured) > min(measured) else ''} timed calls (a slow sampler gets fewer, at least one) after a "
                     f"warm-up; {len(measured)} measurements, every call's wall and CPU seconds in the runs' metrics.json.")
    if skipped:
        notes.append(f"Speed measurements skipped by the max_call_seconds rule ({len(skipped)}): " + "; ".join(skipped))
    elif measured:
        notes.append("No speed measurement was skipped.")
    return notes


def _machine_notes(runs) -> list[str]:
    records: list[Timing] = []
    machines = set()
    for r in runs:
        t = r.get("training")
        if t is not None and t.timing is not None:
            records += [t.timing.training] + ([t.timing.startup] if t.timing.startup else [])
            machines.add(t.timing.machine)
        e = _eval_timing(r)
        records += list(e.evaluators.values())
        machines.add(e.machine)
    machines.discard(None)
    threads = sorted({t.threads for t in records if t.threads is not None})
    loads = [t.load_1min for t in records if t.load_1min is not None]
    unmeasured = sum(1 for r in runs if r.get("training") is None or r.get("training").timing is None)
    notes = [
        f"Machine: {'; '.join(sorted(machines)) if machines else NOT_MEASURED}. Torch threads per job: "
        f"{', '.join(map(str, threads)) if threads else NOT_MEASURED}. 1-minute load average at the end of each "
        f"timed stretch: {f'{min(loads):.2f}–{max(loads):.2f}' if loads else NOT_MEASURED} "
        "(wall seconds move with the load; CPU seconds far less: compare those across runs).",
    ]
    in_process = sum(1 for r in runs if _eval_timing(r).in_training_process)
    notes.append(f"{in_process} of {len(runs)} run(s) were evaluated by the process that trained them (the workflow's "
                 "train job; dgmbench/pending.py): their eval start-up is the evaluation's own (checkpoint and data), "
                 "with no process start of its own; the others were evaluated by a `dgmbench evaluate` process.")
    if unmeasured:
        notes.append(f"{unmeasured} run(s) were trained before CPU seconds and start-up were recorded: "
                     f"'{NOT_MEASURED}' in those columns (retrain to measure them).")
    return notes


def _cores(machines: set) -> int | None:
    """The logical CPUs of the one CPU machine that ran every job (``clock.machine`` writes "…, 2 CPUs (…)"); None
    for several machines, an unrecorded one or a GPU (whose work is not the process's CPU seconds)."""
    if None in machines or any(m.startswith("cuda") for m in machines):
        return None
    counts = {int(m.group(1)) for m in (re.search(r"(\d+) CPUs", s) for s in machines) if m}
    return counts.pop() if len(counts) == 1 else None


def _floor_notes(runs) -> list[str]:
    """Per dataset, the grid's summed training and evaluation CPU seconds, and the wall time they take at the least
    on the machine that ran them: CPU seconds ÷ cores, every core busy and no process start-up. Start-up, scheduling
    and evaluation order can bring a grid down to that floor, not below it."""
    by_dataset = defaultdict(list)
    for r in runs:
        by_dataset[r.info.dataset].append(r)
    notes = []
    for dataset, group in sorted(by_dataset.items()):
        timed = [r.get("training").timing if r.get("training") is not None else None for r in group]
        evals = [_eval_timing(r) for r in group]
        eval_cpu = [_eval_cpu(e) for e in evals]
        if any(t is None or t.training.cpu_seconds is None for t in timed) or None in eval_cpu:
            notes.append(f"Grid totals ({dataset}): {NOT_MEASURED} (a run lacks its CPU seconds).")
            continue
        train = sum(t.training.cpu_seconds for t in timed)
        evaluate = sum(eval_cpu)
        startups = [t.startup.cpu_seconds for t in timed if t.startup is not None and t.startup.cpu_seconds is not None]
        cores = _cores({t.machine for t in timed} | {e.machine for e in evals})
        note = (f"Grid totals ({dataset}, {len(group)} runs): training {train:,.0f} CPU s (validation scoring "
                f"included), evaluation {evaluate:,.0f} CPU s, train-job start-up {sum(startups):,.0f} CPU s over "
                f"{len(startups)} job(s).")
        if cores:
            note += (f" Training and evaluation alone keep the machine's {cores} cores busy for "
                     f"{(train + evaluate) / cores:,.0f} s: no run of this grid on it is faster at these budgets and "
                     "evaluation settings, whatever its start-up and scheduling.")
        notes.append(note)
    return notes


NOTES = [
    "Mean ± sd over the seeds that measured each column (every run, diverged ones included, for the costs; "
    "the runs that trained ok for the NLLs).",
    "FLOPs/step: one train_step (forward, backward; GAN: its D and G updates) on one training batch, counted by "
    "torch.utils.flop_counter.FlopCounterMode at the end of training on a copy of the model: matmuls, "
    "convolutions and attention only (2 FLOPs per multiply-add); element-wise ops and the optimizer are not "
    "counted, and PCA's closed form (an eigendecomposition) counts its matmuls only.",
    "train wall / CPU s: the epochs (training steps and validation scoring), summed over resumed processes; CPU "
    "seconds are the process's, all threads (time.process_time). train GFLOP/s: counted FLOPs × steps / train "
    "wall s (validation time included, so a lower bound on the steps' rate).",
    "start-up s, train job: from the process's start (/proc) to its first training batch — interpreter, imports, "
    "data, model, MLflow; eval job: to its first evaluator (imports, checkpoint, data), or, evaluated in the "
    "training process, from the evaluation's start. A process started by a test or a notebook counts everything it "
    "did before.",
    "eval s: each evaluator's wall seconds in the last evaluation that ran it (`dgmbench evaluate --only` "
    "re-times only what it recomputes); '—': it does not apply to the family. eval wall / CPU s (all): every "
    "evaluator together.",
    "best val NLL ≤ f epochs: the lowest validation NLL (the validation split, not the test images; bits/dim, "
    "an upper bound for bound families) over the first ⌈f × epochs run⌉ epochs — what the best checkpoint would "
    "have scored with that budget (no learning-rate schedule depends on the budget; early stopping could only "
    "have stopped sooner). Families whose validation score is not an NLL (GAN, encoders) show 'not measured'.",
]


@register_table("cost")
def cost_table(runs: list, out_dir: Path) -> list[Path]:
    rank = {m: i for i, m in enumerate(ROW_ORDER)}
    groups = sorted(group_runs(runs).items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)), kv[0][1]))
    seen = {name for r in runs for name in _eval_timing(r).evaluators}
    evaluators = [n for n in EVALUATORS.names() if n in seen] + sorted(seen - set(EVALUATORS.names()))
    rows = [_row(dataset, model, group, evaluators) for (dataset, model), group in groups]
    notes = NOTES + _machine_notes(runs) + _floor_notes(runs) + _sampling_notes(runs)
    return write_table(pd.DataFrame(rows).fillna(NOT_MEASURED), out_dir, "cost", notes=notes) + anytime_figures(dict(groups), out_dir)


def _two_and_five(v: float, _pos=None) -> str:
    """Minor log-axis labels at 2× and 5× each power of ten only ("20", "50"), so they do not overlap."""
    if v <= 0:
        return ""
    return f"{v:g}" if round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) in (2, 5) else ""


def anytime_figures(groups: dict, out_dir: Path) -> list[Path]:
    """``figures/anytime_<dataset>.png``: validation NLL (bits/dim) against cumulative training wall seconds, one
    line per run, one colour per model (the anytime curve: what each family reaches for a given training time)."""
    by_dataset: dict[str, dict[str, list]] = {}
    for (dataset, model), group in groups.items():
        curves = []
        for r in group:
            t = r.get("training")
            if r.info.status == "ok" and t is not None and t.val_bpd and t.timing and t.timing.epoch_seconds:
                pts = [(s, v) for s, v in zip(t.timing.epoch_seconds, t.val_bpd) if v is not None]
                if pts:
                    curves.append(pts)
        if curves:
            by_dataset.setdefault(dataset, {})[model] = curves
    written = []
    fdir = Path(out_dir) / "figures"
    for dataset, models in by_dataset.items():
        fdir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for i, (model, curves) in enumerate(models.items()):
            for j, pts in enumerate(curves):
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=f"C{i % 10}", lw=1, alpha=0.8, label=model if j == 0 else None)
                ax.plot(xs[-1], ys[-1], "o", color=f"C{i % 10}", ms=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # "10", not "10¹"
        ax.xaxis.set_minor_formatter(FuncFormatter(_two_and_five))
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_xlabel("cumulative training wall time (s, log scale; validation scoring included)")
        ax.set_ylabel("validation NLL (bits/dim)")
        ax.set_title(f"{dataset}: validation NLL against training time (an upper bound for bound families)\n"
                     "one line per seed, ● its last epoch", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        plotted = {model: [[list(p) for p in pts] for pts in curves] for model, curves in models.items()}
        written += _save(fig, fdir / f"anytime_{dataset}.png", plotted)  # the PNG and its data manifest
    return written
