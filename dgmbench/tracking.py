"""Everything MLflow, in one place.

Default store: a sqlite database ``mlflow/mlflow.db`` under the working directory (the repository when run by
Snakemake), artifacts beside it in ``mlflow/artifacts``; ``tracking_uri`` in the config (or
``MLFLOW_TRACKING_URI``) points at a shared server instead.

Parallel jobs: sqlite allows one writer at a time and MLflow's first connection runs schema migrations, so
concurrent jobs against a fresh store race. For a sqlite store every write here takes an exclusive
``fcntl`` lock on ``mlflow.db.lock`` (one writer at a time, on one machine or a shared POSIX filesystem) and
retries transient "database is locked" errors. Writes are few and small (one batch per epoch), so the lock
costs little. Against a server (``http://``) no lock is needed; the server serialises writes.

A run's MLflow id is kept in ``<run_dir>/mlflow_run_id`` so that evaluation and a resumed training job log
to the same MLflow run instead of creating a second one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

# No network here, and no reason to phone home anywhere: keep MLflow quiet and quick to fail.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_ALEMBIC_LOG_LEVEL", "WARNING")  # hush schema-migration logs on first use

RUN_ID_FILE = "mlflow_run_id"
RETRIES, RETRY_DELAY = 8, 0.2  # transient "database is locked": up to 8 tries, 0.2 s doubling (≈ 25 s in all)
LOCK_TIMEOUT = 300.0  # seconds to wait for the store's write lock before giving up with a message


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or written; the message says which and how to fix it."""


def default_tracking_uri(workdir: Path | None = None) -> str:
    root = (workdir or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None, workdir: Path | None = None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


class Tracker:
    """A thin wrapper over ``MlflowClient`` that serialises sqlite writers and retries transient errors."""

    def __init__(self, tracking_uri: str | None, experiment: str, workdir: Path | None = None):
        for name in ("mlflow", "alembic", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic", "sqlalchemy"):  # mlflow resets its logger's level on import
            logging.getLogger(name).setLevel(logging.WARNING)
        # The store logs every database error it re-raises, traceback included; _call turns those into one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri = resolve_tracking_uri(tracking_uri, workdir)
        self.db = _sqlite_path(self.uri)
        if self.db is not None:
            try:
                self.db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise TrackingUnavailable(f"cannot create the MLflow store directory {self.db.parent}: {err}") from None
        # Under the lock: creating a client can open the store, and the first opening of a fresh sqlite store
        # runs schema migrations, which race between processes ("duplicate column name") if not serialised.
        self.client = self._call(MlflowClient, tracking_uri=self.uri)
        self.experiment_id = self._call(self._experiment, experiment)

    # -- locking and retries -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if self.db is None:
            yield
            return
        with open(str(self.db) + ".lock", "a") as fh:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:  # a writer holds it for one small write; one that holds it for minutes is stuck
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TrackingUnavailable(
                            f"the MLflow store {self.uri} stayed locked by another process for {LOCK_TIMEOUT:.0f} s "
                            f"({self.db}.lock); let it finish (or stop it) and rerun") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _call(self, fn, *args, **kwargs) -> Any:
        delay = RETRY_DELAY
        for attempt in range(RETRIES):
            try:
                with self._lock():
                    return fn(*args, **kwargs)
            except Exception as err:  # MLflow wraps sqlite and HTTP errors in several types
                text = str(err)
                transient = "database is locked" in text or "Connection reset" in text
                if transient and attempt < RETRIES - 1:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise self._unavailable(err) from None
        raise AssertionError("unreachable")

    def _unavailable(self, err: Exception) -> Exception:
        """The one-line :class:`TrackingUnavailable` for a store error a user can fix; other errors unchanged."""
        text = str(err)
        first = (text.strip().splitlines() or [type(err).__name__])[0][:200]
        if "Connection refused" in text or "Max retries exceeded" in text or "NewConnectionError" in text:
            return TrackingUnavailable(
                f"the MLflow tracking server at {self.uri} is unreachable ({type(err).__name__}); "
                "start it, or set tracking_uri: null in the config to use the local sqlite store")
        if "database is locked" in text:
            return TrackingUnavailable(
                f"the MLflow store {self.uri} stayed locked by another process; let it finish (or stop it) and rerun")
        if "file is not a database" in text or "malformed" in text or "no such table" in text \
                or "Can't locate revision" in text:
            return TrackingUnavailable(
                f"the MLflow store {self.uri} is corrupt or not an MLflow database ({first}); move it aside "
                "(a fresh store is created in its place) or point tracking_uri at another store")
        if isinstance(err, OSError) or "readonly" in text or "unable to open" in text:
            return TrackingUnavailable(f"cannot write the MLflow store {self.uri} ({first}); fix its permissions "
                                       "or point tracking_uri at a writable store")
        if type(err).__name__ == "MlflowException" and ("tracking URI" in text or "scheme" in text):
            return TrackingUnavailable(f"MLflow cannot use the tracking URI {self.uri} ({first}); give "
                                       "http(s)://HOST:PORT, sqlite:///PATH, or null for the default store")
        return err

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.db is not None:  # keep artifacts beside the sqlite file, not in the working directory
            location = (self.db.parent / "artifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception as err:  # another job created it since we looked (servers take no lock of ours)
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise err
            return exp.experiment_id

    # -- runs ----------------------------------------------------------------------------------------------
    def start_run(self, run_dir: Path, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Create the MLflow run for ``run_dir``, or reopen the one recorded there (a resumed job)."""
        id_file = run_dir / RUN_ID_FILE
        if id_file.exists():
            run_id = id_file.read_text().strip()
            try:
                existing = self._call(self.client.get_run, run_id)
                self._call(self.client.update_run, run_id, status="RUNNING")
                if not existing.data.params:  # a job killed between creating the run and logging its params
                    self.log_params(run_id, params)
                return run_id
            except TrackingUnavailable:
                raise
            except Exception:
                pass  # the store was reset: start a new run below
        run = self._call(self.client.create_run, self.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        # Record the id before anything else, so a job killed from here on reopens this run on resume.
        tmp = id_file.with_name(id_file.name + ".tmp")
        tmp.write_text(run_id + "\n")
        os.replace(tmp, id_file)
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v]
        for i in range(0, len(items), 500):
            self._call(self.client.log_batch, run_id, metrics=items[i : i + 500])

    def last_step(self, run_id: str, key: str) -> int:
        """The largest step logged for metric ``key`` in this run, or -1 if none was logged."""
        history = self._call(self.client.get_metric_history, run_id, key)
        return max((m.step for m in history), default=-1)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call(self.client.log_artifact, run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call(self.client.set_terminated, run_id, status=status)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_tags(seed: int) -> dict[str, str]:
    import torch

    from . import __version__

    return {
        "git_commit": git_commit(),
        "dgmbench_version": __version__,
        "torch_version": torch.__version__,
        "seed": str(seed),
    }


def git_commit() -> str:
    """The repository's HEAD commit (with "-dirty" if there are uncommitted changes), or "unknown"."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"
