"""One run, one identity, one writer.

A run directory is created for one (dataset, model, seed, settings): ``identity.json``, written atomically when
training first claims the directory, records them, with a fingerprint of the settings that determine the trained
weights (``train`` and ``hparams``; not the device, threads, tracking store or evaluation settings) and the last
three components of the path it was created at. From then on

* ``dgmbench train`` into the directory must be the same run (a resume), or it is refused;
* ``dgmbench evaluate`` refuses a checkpoint that is not that run's (another family's, another seed's), and a
  directory that is a copy of another (``seed0.bak/``), whose MLflow id would log over the original's metrics;
* ``dgmbench tables`` refuses two metrics files of one (dataset, model, seed), a metrics file that disagrees with
  its directory's identity, and one that sits in a ``<dataset>/<model>/seed<k>`` directory of another run;
* a lock file (``.dgmbench.lock``, an ``fcntl`` lock released when the process ends, however it ends) keeps a
  second ``train`` or ``evaluate`` out of a directory another process is writing.

Directories written before identities existed have no ``identity.json``: training writes one on its next claim,
evaluation and tables check what they can without it (the checkpoint's config, duplicates, the path layout).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

IDENTITY_FILE = "identity.json"
LOCK_FILE = ".dgmbench.lock"
_held: dict[str, Any] = {}  # run directory → open lock file, kept for the life of the process


class IdentityError(Exception):
    """A run directory, checkpoint or metrics file that is not the run it claims to be; the message says which
    files and what to do."""


def fingerprint(run) -> str:
    """Hash of the settings that determine a run's trained weights (``train``, ``hparams`` and the family)."""
    settings = run.to_dict()
    relevant = {k: settings[k] for k in ("model", "variant", "train", "hparams")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity_of(run) -> dict:
    return {"dataset": run.dataset, "model": run.label, "base_model": run.model, "variant": run.variant,
            "seed": run.seed, "fingerprint": fingerprint(run)}


def _tail(path: Path) -> str:
    return "/".join(Path(os.path.abspath(path)).parts[-3:])


def _describe(ident: dict) -> str:
    return f"{ident.get('model')} on {ident.get('dataset')}, seed {ident.get('seed')}, settings {ident.get('fingerprint')}"


def read_identity(run_dir: Path) -> dict | None:
    path = Path(run_dir) / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        ident = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        ident = None
    if not isinstance(ident, dict) or not {"dataset", "model", "seed", "fingerprint"} <= set(ident):
        raise IdentityError(f"{path} is unreadable; delete {run_dir} and retrain the run")
    return ident


def lock(run_dir: Path) -> None:
    """Hold ``run_dir``'s writer lock until this process ends; refuse if another process holds it."""
    key = os.path.abspath(run_dir)
    if key in _held:
        return
    fh = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise IdentityError(f"another dgmbench process is writing {run_dir} (it holds {LOCK_FILE}); wait for it "
                            "to finish, or give this command another --out") from None
    _held[key] = fh


def claim(run, out_dir: Path) -> None:
    """Training's claim on ``out_dir``: take its lock, then write its identity, or check that it is this run's."""
    out_dir = Path(out_dir)
    lock(out_dir)
    mine = identity_of(run)
    ident = read_identity(out_dir)
    if ident is None:
        tmp = out_dir / (IDENTITY_FILE + ".tmp")
        tmp.write_text(json.dumps({**mine, "created_as": _tail(out_dir)}, indent=2) + "\n")
        os.replace(tmp, out_dir / IDENTITY_FILE)
        return
    _check_copy(out_dir, ident)
    if {k: ident.get(k) for k in mine} != mine:
        raise IdentityError(
            f"{out_dir} holds the run {_describe(ident)} ({out_dir / IDENTITY_FILE}), not {_describe(mine)}; "
            f"give this run another --out, or delete {out_dir} to replace that run"
        )


def _check_copy(run_dir: Path, ident: dict) -> None:
    created = ident.get("created_as")
    if created and created != _tail(run_dir):
        raise IdentityError(
            f"{run_dir} is a copy of the run directory …/{created} ({run_dir / IDENTITY_FILE}): its MLflow run and "
            f"metrics are that run's; use the original, or delete the copy (if it was moved, not copied, set "
            f"created_as to {_tail(run_dir)!r} in {IDENTITY_FILE})"
        )


def check_original(run_dir: Path) -> None:
    """Refuse a directory that is a copy of another run's (its identity says it was created elsewhere): what it
    would log to MLflow belongs to the original's run. Directories without an identity pass."""
    ident = read_identity(run_dir)
    if ident is not None:
        _check_copy(run_dir, ident)


def check_checkpoint(run_dir: Path, run, *, writer: bool = True) -> None:
    """Evaluation's check: ``run_dir/checkpoint.pt`` (whose config is ``run``) is the run the directory was
    created for, and no other process is writing the directory. A reader (``writer=False``: ``dgmbench.load_run``)
    gets the first check only: it writes nothing, so neither a copied directory nor a lock concerns it."""
    run_dir = Path(run_dir)
    ident = read_identity(run_dir)
    if ident is not None:
        if writer:
            _check_copy(run_dir, ident)
        mine = identity_of(run)
        if {k: ident.get(k) for k in mine} != mine:
            raise IdentityError(
                f"{run_dir / 'checkpoint.pt'} is the run {_describe(mine)} but {run_dir} was created for "
                f"{_describe(ident)} ({run_dir / IDENTITY_FILE}); put the checkpoint back in its own run directory, "
                f"or retrain this one"
            )
    if writer:
        lock(run_dir)


# ------------------------------------------------------------------------------------------- tables
RUN_FIELDS = {"dataset": str, "model": str, "seed": int, "status": str, "family": str}
_LAYOUT = re.compile(r"seed(\d+)")


def check_metrics(m: Any, path: Path, runs_dir: Path) -> None:
    """One metrics.json as ``tables`` reads it: a mapping with a well-typed ``run`` section that agrees with its
    directory's identity and, in the ``<dataset>/<model>/seed<k>`` layout, with its path."""
    fix = f"rerun `dgmbench evaluate --run {path.parent}`"
    if not isinstance(m, dict) or not isinstance(m.get("run"), dict):
        raise IdentityError(f"{path} has no 'run' section; {fix}")
    for key, tp in RUN_FIELDS.items():
        value = m["run"].get(key)
        if not isinstance(value, tp) or isinstance(value, bool):
            raise IdentityError(f"{path}: run.{key} is missing or not a {tp.__name__}; {fix}")
    for key, value in m.items():
        if key != "_dir" and not isinstance(value, dict):
            raise IdentityError(f"{path}: section {key!r} is not a mapping; {fix}")
    r = m["run"]
    ident = read_identity(path.parent)
    if ident is not None and (ident["dataset"], ident["model"], ident["seed"]) != (r["dataset"], r["model"], r["seed"]):
        raise IdentityError(f"{path} reports {r['model']} on {r['dataset']}, seed {r['seed']}, but its directory was "
                            f"created for {_describe(ident)}; {fix}, or delete {path.parent}")
    try:
        parts = path.parent.relative_to(runs_dir).parts
    except ValueError:
        parts = ()
    layout = _LAYOUT.fullmatch(parts[2]) if len(parts) == 3 else None
    if layout and (parts[0], parts[1], int(layout.group(1))) != (r["dataset"], r["model"], r["seed"]):
        raise IdentityError(f"{path} reports {r['model']} on {r['dataset']}, seed {r['seed']}, but sits in the run "
                            f"directory of {parts[1]} on {parts[0]}, seed {layout.group(1)}; move it to "
                            f"{runs_dir}/{r['dataset']}/{r['model']}/seed{r['seed']}, or delete it")


def check_unique(runs: list[dict]) -> None:
    """No two metrics files of one (dataset, model, seed): a backup copy would count as an extra seed."""
    seen: dict[tuple, str] = {}
    for m in runs:
        key = (m["run"]["dataset"], m["run"]["model"], m["run"]["seed"])
        if key in seen:
            raise IdentityError(f"two metrics.json files for {key[1]} on {key[0]}, seed {key[2]}: {seen[key]} and "
                                f"{m['_dir']}; delete or move the one that is a copy out of the runs directory")
        seen[key] = m["_dir"]


# Headline test numbers (the stability table's final metrics, metrics/stability.py: FINAL_METRIC_KEYS, and the
# NLL in nats). A run that reports one of them as NaN or infinite failed at evaluation whatever its training status
# says: it is counted as failed ("seeds ok: 1/2") instead of being dropped from a mean that still says "2/2 ok".
def _headline() -> list[tuple[str, str]]:
    from .metrics.stability import FINAL_METRIC_KEYS

    return [("likelihood", "nll_nats")] + [(section, key) for section, key, _, _ in FINAL_METRIC_KEYS
                                           if section != "training"]


def mark_failed_seeds(runs: list[dict]) -> None:
    """Set ``run.status = "failed"`` and ``run.failed_reason`` on each ``ok`` run with a non-finite headline
    test metric; every table's "seeds ok" and the stability table's failure count then include it."""
    headline = _headline()
    for m in runs:
        bad = [f"{s}.{k}" for s, k in headline if isinstance(m.get(s), dict)
               and isinstance(m[s].get(k), float) and not math.isfinite(m[s][k])]
        if bad and m["run"]["status"] == "ok":
            m["run"]["status"] = "failed"
            m["run"]["failed_reason"] = f"non-finite test metric {', '.join(bad)}"
