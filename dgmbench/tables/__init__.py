"""results/ tables and figures, rebuilt from the per-run ``metrics.json`` files and nothing else (a copy of
which, ``results/metrics``, is committed beside them: tables/committed.py).

Each table module registers a builder ``fn(runs, out_dir) -> list[Path]`` with :func:`register_table`;
``dgmbench tables`` loads every ``metrics.json`` under the runs directory as a typed
:class:`~dgmbench.results.RunRecord` (each section parsed by its evaluator's ``Result``) and calls every builder.
A builder reads attributes of those results, never string keys, and a cell whose input is absent says so
(:data:`NOT_MEASURED`).
"""

from __future__ import annotations

import html
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


def load_runs(runs_dir: Path, *, skip: Path | None = None) -> list[RunRecord]:
    """Every run's metrics.json under ``runs_dir`` (``<dataset>/<model>/seed<k>/metrics.json``), typed; none
    under ``skip`` (the copies ``build_all`` writes, when they sit inside ``runs_dir``)."""
    raw = []
    skip = Path(skip).resolve() if skip is not None else None
    for path in sorted(Path(runs_dir).glob("**/metrics.json")):
        if skip is not None and skip in path.resolve().parents and skip != Path(runs_dir).resolve():
            continue
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
    """Write ``tables/<name>.csv``, ``.md`` and ``.html`` (and ``.tex``); notes go under the markdown and HTML
    tables (the HTML is what `snakemake --report` shows)."""
    tdir = Path(out_dir) / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    paths = [tdir / f"{name}.csv", tdir / f"{name}.md", tdir / f"{name}.html"]
    df.to_csv(paths[0], index=False)
    md = df.to_markdown(index=False) if len(df) else "(no runs)"
    text = md + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    paths[1].write_text(text)
    paths[2].write_text(html_page(df, name, notes))
    if tex:
        paths.append(tdir / f"{name}.tex")
        paths[-1].write_text(df.to_latex(index=False, escape=True))
    return paths


# The page's own style: the report shows it in a frame of its own, so nothing of the report's style reaches it.
HTML_STYLE = (
    "body{font:13px/1.4 system-ui,sans-serif;margin:0.5em}"
    "table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:0.2em 0.5em;text-align:left;vertical-align:top;min-width:5em;max-width:30em}"
    "th{background:#eee;position:sticky;top:0}"
    "tbody tr:nth-child(even){background:#f7f7f7}"
    "ul{max-width:70em}"
)


def html_page(df: pd.DataFrame, name: str, notes: list[str] = ()) -> str:
    """One table as a standalone HTML page: the table (values escaped), its notes as a list below it."""
    table = df.to_html(index=False, border=0, escape=True) if len(df) else "<p>(no runs)</p>"
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(name)}</title>'
            f"<style>{HTML_STYLE}</style></head>\n<body>\n{table}\n" + (f"<ul>{items}</ul>\n" if notes else "")
            + "</body></html>\n")


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
    """Every table and figure from the metrics.json files under ``runs_dir``, and a copy of those inputs in
    ``out_dir/metrics`` that rebuilds them (tables/committed.py). Returns the paths written."""
    from .committed import METRICS_DIR, copy_inputs
    from .figures import shown_sample_grids

    runs = load_runs(runs_dir, skip=Path(out_dir) / METRICS_DIR)
    if not runs:
        raise FileNotFoundError(f"no metrics.json under {runs_dir}; run the pipeline (snakemake) or dgmbench evaluate first")
    written = []
    for name in TABLES.names():
        written += TABLES.get(name)(runs, Path(out_dir))
    return written + copy_inputs(runs, Path(runs_dir), Path(out_dir), shown_sample_grids(runs))


from . import figures, likelihood  # noqa: E402,F401  (register the builders)
from . import sample_quality  # noqa: E402,F401
from . import probe  # noqa: E402,F401
from . import ood  # noqa: E402,F401
from . import matrix, plots  # noqa: E402,F401
from . import cost  # noqa: E402,F401
