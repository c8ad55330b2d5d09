"""results/ tables and figures, rebuilt from the per-run ``metrics.json`` files and nothing else.

Each table module registers a builder ``fn(runs, out_dir) -> list[Path]`` with :func:`register_table`;
``dgmbench tables`` loads every ``metrics.json`` under the runs directory as a typed
:class:`~dgmbench.results.RunRecord` (each section parsed by its evaluator's ``Result``) and calls every builder.
A builder reads attributes of those results, never string keys, and a cell whose input is absent says so
(:data:`NOT_MEASURED`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from .. import identity
from ..metrics import ResultError
from ..registry import Registry
from ..results import RunRecord

log = logging.getLogger("dgmbench.tables")

TABLES: Registry[Callable] = Registry("table")


def register_table(name: str):
    return TABLES.register(name)


NOT_MEASURED = "not measured"  # a cell whose input section is absent from the runs


def load_runs(runs_dir: Path) -> list[RunRecord]:
    """Every run's metrics.json under ``runs_dir`` (``<dataset>/<model>/seed<k>/metrics.json``), typed."""
    raw = []
    for path in sorted(Path(runs_dir).glob("**/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); rerun `dgmbench evaluate --run {path.parent}`") from None
        identity.check_metrics(m, path, Path(runs_dir))  # well-formed, and the run its directory says
        m["_dir"] = str(path.parent)
        raw.append(m)
    identity.check_unique(raw)  # a backup copy is not an extra seed
    identity.mark_failed_seeds(raw)  # NaN test metrics count as a failed seed, not a dropped one
    runs = []
    for m in raw:
        path = Path(m.pop("_dir")) / "metrics.json"
        try:
            runs.append(RunRecord.from_dict(m, where=path.parent))
        except ResultError as err:
            raise ValueError(f"{path}: {err}") from None
    return runs


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    s = pd.Series(vals)
    return float(s.mean()), float(s.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def fmt_mean_sd(values: Iterable[float], digits: int = 2) -> str:
    """"m ± sd" over seeds (sample sd, ddof=1), "m" for one value, "—" for none."""
    m, sd, n = mean_sd(values)
    if n == 0:
        return "—"
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def fmt_stderr(values: Iterable[float | None], digits: int = 3) -> str:
    """The mean over seeds of per-run standard errors; "0 (exact)" when every one is exactly 0, "—" for none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return "—"
    if all(v == 0 for v in vals):
        return "0 (deterministic)"
    return f"{sum(vals) / len(vals):.{digits}f}"


def write_table(df: pd.DataFrame, out_dir: Path, name: str, *, notes: list[str] = (), tex: bool = False) -> list[Path]:
    """Write ``tables/<name>.csv`` and ``.md`` (and ``.tex``); notes go under the markdown table."""
    tdir = Path(out_dir) / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    paths = [tdir / f"{name}.csv", tdir / f"{name}.md"]
    df.to_csv(paths[0], index=False)
    md = df.to_markdown(index=False) if len(df) else "(no runs)"
    text = md + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    paths[1].write_text(text)
    if tex:
        paths.append(tdir / f"{name}.tex")
        paths[-1].write_text(df.to_latex(index=False, escape=True))
    return paths


def group_runs(runs: list[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """(dataset, model) → runs, in a stable order."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in sorted(runs, key=lambda r: (r.info.dataset, r.info.model, r.info.seed)):
        groups.setdefault((r.info.dataset, r.info.model), []).append(r)
    return groups


def results(runs: list[RunRecord], name: str) -> list:
    """The ``name`` results of ``runs`` that have one (one per seed)."""
    return [r.results[name] for r in runs if name in r.results]


def ok_results(runs: list[RunRecord], name: str) -> list:
    """The ``name`` results of the runs that trained without diverging."""
    return [r.results[name] for r in runs if r.info.status == "ok" and name in r.results]


def build_all(runs_dir: Path, out_dir: Path) -> list[Path]:
    runs = load_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(f"no metrics.json under {runs_dir}; run the pipeline (snakemake) or dgmbench evaluate first")
    written = []
    for name in TABLES.names():
        written += TABLES.get(name)(runs, Path(out_dir))
    return written


from . import figures, likelihood  # noqa: E402,F401  (register the builders)
from . import sample_quality  # noqa: E402,F401
from . import probe  # noqa: E402,F401
from . import ood  # noqa: E402,F401
from . import matrix, plots  # noqa: E402,F401
from . import cost  # noqa: E402,F401
