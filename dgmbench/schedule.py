"""The order in which the workflow starts its train jobs: the longest first, by what each one cost last time.

With two cores and ~30 runs, the grid's wall time is set by how the last jobs pack: a 2-minute run started last
leaves a core idle for most of 2 minutes (the diffusion runs did, on digits). Starting the longest runs first
(longest-processing-time-first list scheduling, within 4/3 of the best order) avoids that tail. "Longest" is
measured, not guessed: the CPU seconds of training and evaluation per run in the committed cost table
(``results/tables/cost.csv``, written by the last full run). A run the table does not know (a new family, a
plugin, another dataset) goes first, since it may be the longest. Standard library only: the Snakefile reads it.
"""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("train CPU s", "eval CPU s (all)")  # per run, mean over seeds (dgmbench.tables.cost)


def _number(cell: str) -> float | None:
    """The mean of a cost-table cell ("35.2 ± 0.5", "1,234", "—") or None."""
    try:
        return float(cell.split("±")[0].replace(",", "").strip())
    except (ValueError, AttributeError):
        return None


def measured_costs(cost_csv: Path) -> dict[tuple[str, str], float]:
    """(dataset, model) → CPU seconds of one run, training and evaluation together, from a cost table; ``{}`` when
    the file is absent or unreadable (every job then has the same priority: Snakemake's own order)."""
    try:
        with open(cost_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    costs = {}
    for row in rows:
        parts = [_number(row.get(col, "")) for col in COLUMNS]
        if row.get("dataset") and row.get("model") and all(p is not None for p in parts):
            costs[(row["dataset"], row["model"])] = sum(parts)
    return costs


def priority(costs: dict[tuple[str, str], float], dataset: str, model: str) -> int:
    """A train job's priority (higher starts sooner): its measured CPU seconds, rounded; a run with no measurement
    outranks every measured one."""
    if (dataset, model) in costs:
        return round(costs[(dataset, model)])
    return round(max(costs.values(), default=0.0)) + 1
