"""The committed inputs of the tables, and the check that the committed tables follow from them.

``dgmbench tables --runs RUNS --out OUT`` copies what it read into ``OUT/metrics/<dataset>/<model>/seed<k>/``:
every run's ``metrics.json`` and the ``samples.png`` grids a figure shows, and removes older copies there, so
``OUT/metrics`` is exactly the input of ``OUT/tables`` and ``OUT/figures`` (and small enough to commit; the run
directories, with their checkpoints, are not). The copies sit in the ``<dataset>/<model>/seed<k>`` layout of
the run they hold, so :func:`dgmbench.tables.load_runs` reads them back under the same identity checks.

:func:`check` rebuilds ``OUT`` from ``OUT/metrics`` in a temporary directory and returns the first difference:
a table (every ``.csv``/``.md``/``.tex``, byte for byte), a figure's plotted data (its ``.json`` manifest: a
PNG's bytes depend on the matplotlib version, the numbers it plots do not), or a file one side has and the
other lacks. CI runs it on every committed results directory (tests/test_committed_results.py); so does
``dgmbench tables --check``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

METRICS_DIR = "metrics"  # OUT/metrics: the copies
COPIED = ("metrics.json", "samples.png")  # the only file names written (and removed) under OUT/metrics
OUTPUTS = ("tables", "figures")


def copy_inputs(runs: list, runs_dir: Path, out_dir: Path, shown_grids: dict) -> list[Path]:
    """Copy each run's metrics.json, and the sample grids in ``shown_grids`` ((dataset, model) → run), to
    ``out_dir/metrics/<dataset>/<model>/seed<k>/``; remove copies there that are no longer inputs. Returns the
    copies."""
    dest_root = Path(out_dir) / METRICS_DIR
    in_place = dest_root.resolve() == Path(runs_dir).resolve()  # `--runs OUT/metrics`: the copies are the input
    keep = set()
    for r in runs:
        dest = dest_root / r.info.dataset / r.info.model / f"seed{r.info.seed}"
        names = ["metrics.json"] + (["samples.png"] if shown_grids.get((r.info.dataset, r.info.model)) is r else [])
        for name in names:
            keep.add(dest / name)
            if not in_place:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(r.dir) / name, dest / name)
    if not in_place and dest_root.exists():
        for path in sorted(dest_root.rglob("*"), reverse=True):  # files before the directories that hold them
            if path.is_file() and path.name in COPIED and path not in keep:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return sorted(keep)


def regenerate_command(out_dir: Path) -> str:
    return f"dgmbench tables --runs {Path(out_dir) / METRICS_DIR} --out {out_dir}"


def _files(d: Path) -> dict[str, Path]:
    """Relative path → file under ``d``, without dotfiles (Snakemake's ``.snakemake_timestamp``)."""
    if not d.is_dir():
        return {}
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)}


def _first_line_difference(a: bytes, b: bytes) -> str:
    la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(la, lb), 1):
        if x != y:
            col = next((j for j, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
            start = max(0, col - 20)
            return f"line {i}, column {col + 1}: {x[start:col + 30]!r} here, {y[start:col + 30]!r} rebuilt"
    return f"{len(la)} lines here, {len(lb)} rebuilt"


def _manifest_difference(a: bytes, b: bytes) -> str | None:
    """None when two figure manifests hold the same plotted data, else which data differ."""
    try:
        ma, mb = json.loads(a), json.loads(b)
    except json.JSONDecodeError:
        return "its manifest is not JSON"
    if ma.get("data_sha1") == mb.get("data_sha1"):
        return None
    da, db = ma.get("data") or {}, mb.get("data") or {}
    keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
    return (f"plotted data differ (sha1 {str(ma.get('data_sha1'))[:10]} here, {str(mb.get('data_sha1'))[:10]} rebuilt"
            + (f"; in {keys[0]!r})" if keys else ")"))


def check(out_dir: Path) -> str | None:
    """None when ``out_dir``'s tables and figures follow from ``out_dir/metrics``; else one line naming the first
    differing file and the command that regenerates it."""
    out_dir = Path(out_dir)
    metrics = out_dir / METRICS_DIR
    regen = regenerate_command(out_dir)
    if not any(metrics.glob("**/metrics.json")):
        return (f"{out_dir / 'tables'} has no committed metrics beside it (no {metrics}/**/metrics.json); run "
                f"`dgmbench tables --runs {out_dir / 'runs'} --out {out_dir}` (the grid's runs_dir) on the runs it "
                f"reports and commit {metrics}")
    from . import build_all

    with tempfile.TemporaryDirectory(prefix="dgmbench-check-") as tmp:
        try:
            build_all(metrics, Path(tmp))
        except Exception as err:  # noqa: BLE001 — any failure to rebuild is the finding, in one line
            return f"rebuilding from {metrics} failed ({type(err).__name__}: {str(err)[:200]}); fix {metrics} or the code"
        for sub in OUTPUTS + (METRICS_DIR,):
            here, rebuilt = _files(out_dir / sub), _files(Path(tmp) / sub)
            for name in sorted(set(here) | set(rebuilt)):
                where = out_dir / sub / name
                if name not in rebuilt:
                    what = "is a stale copy: no table or figure reads it" if sub == METRICS_DIR else \
                        f"is not produced from {metrics} by this code (stale)"
                    return f"{where} {what}; delete it (git rm), or regenerate: {regen}"
                if name not in here:
                    return f"{where} is missing: the code produces it from {metrics}; regenerate: {regen}"
                a, b = here[name].read_bytes(), rebuilt[name].read_bytes()
                if name.endswith(".png"):
                    if sub == METRICS_DIR and a != b:  # cannot happen: the rebuild copies these very bytes
                        return f"{where} differs from its rebuilt copy; regenerate: {regen}"
                    continue  # a figure: its manifest (.json) is compared instead
                if sub == "figures" and name.endswith(".json"):
                    diff = _manifest_difference(a, b)
                    if diff:
                        return f"{where}: {diff}; regenerate: {regen}"
                elif a != b:
                    return f"{where} differs from its rebuild from {metrics} ({_first_line_difference(a, b)}); " \
                           f"regenerate: {regen}"
        pngs = [n for n in _files(out_dir / "figures") if n.endswith(".png")]
        for name in pngs:
            if not (out_dir / "figures" / name).with_suffix(".json").exists():
                return f"{out_dir / 'figures' / name} has no data manifest beside it; regenerate: {regen}"
    return None


def results_dirs(root: Path) -> list[Path]:
    """The results directories under ``root/results`` whose tables are committed (git ls-files): ``results``
    itself and each ``results/<grid>``. Without git (an unpacked archive), every one with a ``tables/`` folder."""
    root = Path(root)
    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=root, capture_output=True, check=True)
        files = [Path(f) for f in proc.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [p.relative_to(root) for p in (root / "results").glob("**/tables/*") if p.is_file()]
    dirs = {f.parents[1] for f in files if len(f.parts) >= 3 and f.parent.name == "tables"
            and METRICS_DIR not in f.parts}
    return sorted(root / d for d in dirs)
