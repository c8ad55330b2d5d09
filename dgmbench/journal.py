"""MLflow logging deferred to one process per grid: each job journals what it logs; ``dgmbench track`` writes it.

Importing MLflow and opening its store costs a job ~2 CPU s (``benchmarks/startup.py``), more than the training loop of
most runs of the default grid. With ``tracking_live: false`` (the workflow's default) a job gets a :class:`Journal`
instead of a :class:`~dgmbench.tracking.Tracker`: the same calls, appended as JSON lines to
``<run>/mlflow-journal/ops.jsonl`` (the artifacts copied beside it, as they were when logged), and the workflow's
last job, ``dgmbench track``, replays every run's journal into the store (:func:`replay_run`) with the steps and
timestamps the job recorded. The store then holds what live logging would have written (tests/test_journal.py
compares the two); what is lost is only that the UI shows a run's curves when the grid ends, not while it trains.

Replaying is incremental and safe to repeat: the number of journal entries already in the store is a tag of the
MLflow run (``dgmbench.journal_ops``), written in the same batch as the metrics and tags it covers, so a replay that
is killed and run again neither loses nor duplicates a point; a later job's entries (a re-evaluation, a resumed
training) are replayed by the next ``dgmbench track``. A journal is data, never code: every entry is checked
(its kind, its fields' types, artifacts only from the journal's own directory) before anything is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .tracking import metric_values, param_values

JOURNAL_DIR = "mlflow-journal"
OPS = "ops.jsonl"
OFFSET_TAG = "dgmbench.journal_ops"  # on the MLflow run: how many of the journal's entries the store holds
KINDS = {"start", "params", "metrics", "tags", "artifact", "end"}
BATCH_METRICS, BATCH_TAGS = 900, 90  # MLflow's log_batch takes at most 1000 metrics and 100 tags


class JournalError(ValueError):
    """A journal that cannot be replayed; the message names the file, the line and what to do."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """:class:`~dgmbench.tracking.Tracker`'s interface, appending to ``<run_dir>/mlflow-journal/`` instead of writing
    the store. Imports no MLflow. ``run_id`` arguments are accepted and ignored: a journal belongs to one run."""

    def __init__(self, tracking_uri: str | None, experiment: str | None):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.dir: Path | None = None

    def _append(self, kind: str, **fields: Any) -> None:
        """Append one entry as one line (one write, flushed: a killed job leaves whole lines, or a torn last one
        that replay skips)."""
        assert self.dir is not None, "start_run first"
        with open(self.dir / OPS, "a") as fh:
            fh.write(json.dumps({"op": kind, "time": _now_ms(), **fields}, sort_keys=True) + "\n")

    def start_run(self, run_dir: Path, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        self.dir = Path(run_dir) / JOURNAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._append("start", run_name=run_name, experiment=self.experiment, tracking_uri=self.tracking_uri,
                     params=param_values(params), tags={k: str(v) for k, v in tags.items()})
        return "journal"

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._append("params", values=param_values(params))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self._append("metrics", step=int(step), values=metric_values(metrics))

    def last_step(self, run_id: str, key: str) -> int:
        """The largest step of ``key`` in this journal, or -1 (what :meth:`Tracker.last_step` answers from the store
        once the journal is replayed)."""
        steps = [op["step"] for op in read_ops(self.dir / OPS) if op["op"] == "metrics" and key in op["values"]]
        return max(steps, default=-1)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._append("tags", values={k: str(v) for k, v in tags.items()})

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Copy ``path`` into the journal (the file as it is now, as live logging would upload it), under a name
        of its own (``artifacts/<entry>-<name>``: no copy of a metrics.json is taken for a run's own by a scan)."""
        if artifact_path is not None:
            raise ValueError("Journal.log_artifact: artifact_path is not journalled; log to the run's root")
        index = sum(1 for _ in open(self.dir / OPS, "rb"))  # the entry this one will be (start_run wrote one)
        name = Path(path).name
        rel = Path("artifacts") / f"{index}-{name}"
        (self.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.dir / rel)
        self._append("artifact", file=rel.as_posix(), name=name)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._append("end", status=status)


def open_tracker(tracking_uri: str | None, experiment: str | None, *, journal: bool):
    """A :class:`Journal` (``journal``: the workflow's deferred logging) or a live
    :class:`~dgmbench.tracking.Tracker`, which fails here if the store is unreachable."""
    if journal:
        return Journal(tracking_uri, experiment)
    from .tracking import Tracker

    return Tracker(tracking_uri, experiment)


# ------------------------------------------------------------------------------------------------------- replay
def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise JournalError(f"{where}: {what}; this journal was not written by dgmbench (or was edited): move it "
                           "aside and rerun the run's jobs, or delete it to leave the run out of MLflow")


def _str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def read_ops(path: Path) -> list[dict]:
    """The journal's entries, each checked; a torn last line (a job killed while writing it) is left out."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as every complete write does
    ops = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        try:
            op = json.loads(line)
        except ValueError:
            raise JournalError(f"{where}: not a JSON line; this journal was not written by dgmbench (or was edited): "
                               "move it aside and rerun the run's jobs, or delete it to leave the run out of MLflow") \
                from None
        _check(isinstance(op, dict) and op.get("op") in KINDS, where, f"unknown entry {str(op)[:60]!r}")
        _check(isinstance(op.get("time"), int) and op["time"] >= 0, where, "no time (ms) on the entry")
        kind = op["op"]
        if kind == "start":
            _check(isinstance(op.get("run_name"), str) and _str_dict(op.get("params")) and _str_dict(op.get("tags"))
                   and isinstance(op.get("experiment"), str)
                   and (op.get("tracking_uri") is None or isinstance(op["tracking_uri"], str)),
                   where, "a bad start entry")
        elif kind in ("params", "tags"):
            _check(_str_dict(op.get("values")), where, f"{kind} that are not text")
        elif kind == "metrics":
            values = op.get("values")
            _check(isinstance(op.get("step"), int) and isinstance(values, dict) and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
                for k, v in values.items()), where, "metrics that are not numbers at an integer step")
        elif kind == "artifact":
            rel, name = op.get("file"), op.get("name")
            _check(isinstance(rel, str) and not Path(rel).is_absolute() and ".." not in Path(rel).parts
                   and Path(rel).parts[:1] == ("artifacts",), where, f"artifact {str(rel)[:80]!r} outside the journal")
            _check(isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name,
                   where, f"artifact name {str(name)[:80]!r} is not a file name")
        elif kind == "end":
            _check(op.get("status") in ("FINISHED", "FAILED", "KILLED"), where, "a bad end status")
        ops.append(op)
    if torn:
        pass  # an incomplete line: its job died mid-write, and the job that reruns writes the entry again
    return ops


@contextlib.contextmanager
def _replay_lock(journal_dir: Path):
    """One replay of a run at a time (two `dgmbench track` at once would both log the entries they both see)."""
    with open(journal_dir / "replay.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def replay_run(run_dir: Path, trackers: dict, tracking_uri: str | None = None) -> int:
    """Write the entries of ``run_dir``'s journal that the store does not hold yet; return how many.
    ``trackers`` caches one Tracker per (store, experiment) across runs; ``tracking_uri`` overrides the runs' own."""
    from .config import check_tracking_uri
    from .identity import check_original
    from .tracking import RUN_ID_FILE, Tracker

    run_dir = Path(run_dir)
    journal_dir = run_dir / JOURNAL_DIR
    ops = read_ops(journal_dir / OPS)
    if not ops:
        return 0
    check_original(run_dir)  # a copy (seed0.bak/) holds the original's MLflow id: it would log over that run
    root = journal_dir.resolve()
    for number, op in enumerate(ops, 1):  # every artifact there, a file of the journal's own: before any write
        if op["op"] == "artifact":
            file = journal_dir / op["file"]
            _check(file.is_file() and not file.is_symlink() and file.resolve().is_relative_to(root),
                   f"{journal_dir / OPS}:{number}", f"artifact {op['file']!r} is missing or not a file of the journal")
    start = ops[0]
    _check(start["op"] == "start", f"{journal_dir / OPS}:1", "the journal does not begin with a start")
    uri = tracking_uri or start["tracking_uri"]
    if tracking_uri is None:  # a grid config's rule (mlflow/ or results/): a journal is data, and names no other store
        check_tracking_uri(uri, confine=True)
    key = (uri, start["experiment"])
    if key not in trackers:
        trackers[key] = Tracker(*key)
    tracker = trackers[key]
    with _replay_lock(journal_dir):
        run_id, done = None, 0
        id_file = run_dir / RUN_ID_FILE
        if id_file.exists():  # a run replayed (or logged live) before; None if the store was reset since
            run_id = id_file.read_text().strip()
            stored = tracker.run_tags(run_id)
            if stored is None:
                run_id = None  # the journal is replayed whole, into a new run
            else:
                done = int(stored.get(OFFSET_TAG, "0")) if stored.get(OFFSET_TAG, "0").isdigit() else 0
        if done >= len(ops):
            return 0
        metrics: list = []
        tags: dict[str, str] = {}

        def flush(upto: int) -> None:
            """Log the collected metrics and tags with the count of entries they complete, in one batch."""
            tracker.log_batch(run_id, list(metrics), {**tags, OFFSET_TAG: str(upto)})
            metrics.clear()
            tags.clear()

        for index in range(done, len(ops)):
            op = ops[index]
            kind = op["op"]
            if kind == "start":
                if run_id is not None:
                    flush(index)
                run_id = tracker.start_run(run_dir, op["run_name"], op["params"], op["tags"], start_time=op["time"])
                continue
            _check(run_id is not None, f"{journal_dir / OPS}:{index + 1}", "an entry before any start")
            if kind == "metrics":
                if len(metrics) + len(op["values"]) > BATCH_METRICS or len(tags) > BATCH_TAGS:
                    flush(index)
                metrics.extend((k, float(v), op["time"], op["step"]) for k, v in op["values"].items())
            elif kind == "tags":
                if len(tags) + len(op["values"]) > BATCH_TAGS:
                    flush(index)
                tags.update(op["values"])
            else:  # params, artifacts and the end are idempotent: written again if a replay stops before its tag
                flush(index)
                if kind == "params":
                    tracker.log_params(run_id, op["values"])
                elif kind == "artifact":  # uploaded under the name it was logged with
                    with tempfile.TemporaryDirectory(prefix="dgmbench-artifact-") as tmp:
                        shutil.copyfile(journal_dir / op["file"], Path(tmp) / op["name"])
                        tracker.log_artifact(run_id, Path(tmp) / op["name"])
                else:
                    tracker.end_run(run_id, op["status"], end_time=op["time"])
        flush(len(ops))
    return len(ops) - done


def replay_all(runs_dir: Path, *, tracking_uri: str | None = None,
               progress: Callable[[str], None] = print) -> tuple[int, list[str]]:
    """Replay every journal under ``runs_dir``; returns (entries written, problems). A journal that cannot be
    replayed is named in ``problems`` and the others are still written."""
    from .identity import IdentityError

    trackers: dict = {}
    total, problems = 0, []
    for ops_file in sorted(Path(runs_dir).rglob(f"{JOURNAL_DIR}/{OPS}")):
        run_dir = ops_file.parent.parent
        try:
            n = replay_run(run_dir, trackers, tracking_uri)
        except (JournalError, IdentityError) as err:
            problems.append(str(err))
            continue
        total += n
        if n:
            progress(f"{run_dir}: {n} journal entries written to MLflow")
    return total, problems
