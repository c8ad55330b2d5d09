"""An evaluation made by the training process, handed to the workflow's evaluate job (``metrics.pending.json``).

The workflow's train job evaluates the run it has just trained in the same process (``dgmbench train
--evaluate-pending``), which saves the ~5 s of CPU that a process of its own costs (interpreter, torch, MLflow,
opening the store): more than most evaluations of the default grid. It leaves the metrics beside a **key**: the
SHA-256 of the checkpoint they were computed from, the evaluation settings (the evaluate job's own
``--config-json``, as canonical JSON) and a hash of dgmbench's source. The evaluate job (``dgmbench evaluate
--adopt-pending``) takes the file as ``metrics.json`` only if that key equals the key of what it would evaluate now,
and evaluates as before otherwise, so a change of the eval settings still re-evaluates a trained run alone.

Snakemake deletes a job's declared outputs before it runs the job, which is why the train job writes a file of its
own and never ``metrics.json``. Standard library only: the evaluate job that adopts imports no torch and no MLflow
(the training process logged the evaluation to the run's MLflow run already).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PENDING = "metrics.pending.json"


def write_json(obj: dict, path: Path) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file of this process's own, then a rename), so a
    reader never sees half a file and two processes writing the same path never share a temporary file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")
    os.replace(tmp, path)


def source_hash() -> str:
    """SHA-256 over dgmbench's own source files (path and bytes, in path order): the code an evaluation ran."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pending_key(run_dir: Path, eval_grid: dict) -> dict:
    """What an evaluation of ``run_dir`` depends on: its checkpoint's bytes, the evaluation's settings (the grid an
    evaluate job is handed, canonical JSON: equal grids give equal text) and dgmbench's source."""
    return {"checkpoint_sha256": file_sha256(Path(run_dir) / "checkpoint.pt"),
            "eval_grid": json.dumps(eval_grid, sort_keys=True), "source_sha256": source_hash()}


def adopt_pending(run_dir: Path, eval_grid: dict) -> str | None:
    """Take ``run_dir/metrics.pending.json`` as ``metrics.json`` if it was computed from this checkpoint, with these
    settings and this code (its key equals :func:`pending_key`), and return None; otherwise delete it and return
    why it was not taken (the caller evaluates). Imports nothing heavy: no torch, no MLflow (the training process
    logged the evaluation to the run already)."""
    run_dir = Path(run_dir)
    pending = run_dir / PENDING
    if not pending.exists():
        return f"no {PENDING} to adopt (none left by a training process)"
    try:
        data = json.loads(pending.read_text())
        key, metrics = data["key"], data["metrics"]
        reason = next((f"its {name} differs" for name, value in pending_key(run_dir, eval_grid).items()
                       if key.get(name) != value), None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = f"it is unreadable ({type(err).__name__})"
    if reason is None:
        write_json(metrics, run_dir / "metrics.json")
    pending.unlink(missing_ok=True)
    return None if reason is None else f"{PENDING} not taken: {reason}"
