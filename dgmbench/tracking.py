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

What a run holds (a measurement is a metric; anything set rather than measured is a param or a tag):

* metrics: the few headline test numbers of :data:`HEADLINE_METRICS` at step = the evaluation index, and the
  per-epoch curves at step = epoch (:func:`epoch_metrics`: ``train_loss`` and the family's other ``train_*``
  terms, ``val_nats``, ``val_bpd``, ``wall_seconds`` since the start). MLflow orders a run's charts by name:
  these names put the test numbers first, then the curves, then the time. The rest of ``metrics.json`` is the
  run's artifact.
* params: the resolved training config (immutable).
* tags: what the run is (``dataset``, ``model``, ``family``, ``seed``, ``grid``: filter and group by these),
  provenance (git commit, versions), state (``status``, ``epochs_run``, ``best_epoch``, ``resumed_from_epoch``),
  the evaluation settings (``eval.*``), what the curves are (``train_loss``, ``val_nats``), the run's colour and
  description. Every grid is its own experiment, so a grid's runs are one experiment's runs; no parent run is
  needed (and none could be created once by independent Snakemake jobs without more locking).

Experiments are created in MLflow's model-training view (:data:`EXPERIMENT_TAGS`); ``dgmbench ui`` adds to each
experiment one saved view per dataset (:func:`dataset_view`), the runs list with the headline columns.

``import dgmbench.tracking`` must stay cheap: mlflow (≈ 2 s of imports) is imported inside the functions that
use it, never at module level.
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


# MLflow 3 opens an experiment in its GenAI view unless told it is model training. Older 3.x UIs read the kind
# from this experiment tag; newer ones from the global workflow type, which `dgmbench ui`'s links set
# (?workflowType=machine_learning). Either way the tag also keeps the UI from inferring a kind and writing it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
WORKFLOW_QUERY = "workflowType=machine_learning"

# The test metrics a run logs (key → what it is); everything else stays in the metrics.json artifact.
HEADLINE_METRICS = {
    "test_nll_bpd": "test NLL in bits/dim (exact, or the tightest bound the family has)",
    "test_coded_bpd": "bits/dim of a real lossless bitstream of the same test images",
    "test_fd": "Fréchet distance of samples to test images in the suite's classifier features",
    "test_probe_acc": "linear-probe test accuracy of the representation",
    "test_samples_per_s": "samples per second at the largest batch the evaluation measured",
}
# Run colours: one hue per registered family (distinct for up to 12 families, then they repeat), lighter for
# each further seed, so the seeds of a family read as one group and families never share a colour. Tableau 10
# plus two; MLflow itself hashes the run id into 29 colours, which repeats across a grid of 33 runs.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#17becf", "#7f3c8d")


def param_values(params: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: text, at most 6,000 characters each."""
    return {k: str(v)[:6000] for k, v in params.items()}


def metric_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``metrics`` that are logged: ints and floats (±inf included), never NaN or anything else."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


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

    def __init__(self, tracking_uri: str | None, experiment: str | None, workdir: Path | None = None):
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
        self.experiment_id = self._call(self._experiment, experiment) if experiment is not None else None

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
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except Exception as err:  # another job created it since we looked (servers take no lock of ours)
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise err
            return exp.experiment_id

    # -- runs ----------------------------------------------------------------------------------------------
    def start_run(self, run_dir: Path, run_name: str, params: dict[str, Any], tags: dict[str, str],
                  start_time: int | None = None) -> str:
        """Create the MLflow run for ``run_dir``, or reopen the one recorded there (a resumed job). ``start_time``
        (ms since the epoch; default now): when the job started, for a replayed journal (dgmbench/journal.py)."""
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
        run = self._call(self.client.create_run, self.experiment_id, start_time=start_time, run_name=run_name,
                         tags=tags)
        run_id = run.info.run_id
        # Record the id before anything else, so a job killed from here on reopens this run on resume.
        tmp = id_file.with_name(id_file.name + ".tmp")
        tmp.write_text(run_id + "\n")
        os.replace(tmp, id_file)
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(param_values(params).items())]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metric_values(metrics).items()]
        for i in range(0, len(items), 500):
            self._call(self.client.log_batch, run_id, metrics=items[i : i + 500])

    def log_batch(self, run_id: str, metrics: list[tuple[str, float, int, int]], tags: dict[str, str]) -> None:
        """One write of (key, value, timestamp ms, step) metrics and tags (at most 1000 and 100): all or none."""
        from mlflow.entities import Metric, RunTag

        self._call(self.client.log_batch, run_id, metrics=[Metric(*m) for m in metrics],
                   tags=[RunTag(k, v) for k, v in tags.items()])

    def run_tags(self, run_id: str) -> dict[str, str] | None:
        """The tags of run ``run_id``, or None if the store has no such run (it was reset)."""
        try:
            return dict(self._call(self.client.get_run, run_id).data.tags)
        except TrackingUnavailable:
            raise
        except Exception:  # noqa: BLE001 - MLflow's "run not found" (its type differs between stores)
            return None

    def last_step(self, run_id: str, key: str) -> int:
        """The largest step logged for metric ``key`` in this run, or -1 if none was logged."""
        history = self._call(self.client.get_metric_history, run_id, key)
        return max((m.step for m in history), default=-1)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call(self.client.log_artifact, run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        self._call(self.client.set_terminated, run_id, status=status, end_time=end_time)

    # -- the UI ------------------------------------------------------------------------------------------------
    def prepare_ui(self) -> list[tuple[str, str, str, int]]:
        """Give every experiment that holds dgmbench runs the model-training kind (unless it has a kind) and one
        saved view per dataset of its runs (replaced each time, so a newer dgmbench updates them). Returns
        (experiment name, experiment id, dataset, number of runs) per view."""
        import json
        from collections import Counter

        views = []
        for exp in self._call(self.client.search_experiments):
            runs = self._call(self.client.search_runs, [exp.experiment_id], max_results=50000)
            datasets = Counter(r.data.params["dataset"] for r in runs if "dataset" in r.data.params)
            if not datasets:
                continue  # not a dgmbench experiment (or an empty one): leave it as it is
            for key, value in EXPERIMENT_TAGS.items():
                if key not in exp.tags:
                    self._call(self.client.set_experiment_tag, exp.experiment_id, key, value)
            for dataset, count in sorted(datasets.items()):
                state = json.dumps(dataset_view(dataset), separators=(",", ":"))
                self._call(self.client.set_experiment_tag, exp.experiment_id, VIEW_TAG + dataset, state)
                views.append((exp.name, exp.experiment_id, dataset, count))
        return views


VIEW_TAG = "mlflow.sharedViewState."  # + key: a saved view, opened by #/experiments/<id>/runs?viewStateShareKey=key


def dataset_view(dataset: str) -> dict:
    """A saved runs-list view (the state MLflow's "share view" stores, plain JSON): the runs of ``dataset``
    sorted by name (model, then seed), with columns for what each run is and its headline metrics, and every
    run's curves in the charts (MLflow shows only the first 10 by default)."""
    column = lambda kind, key: f"{kind}.`{key}`"  # noqa: E731 (MLflow's column key format)
    columns = ([column("tags", k) for k in ("family", "seed")] + [column("metrics", k) for k in HEADLINE_METRICS]
               + [column("metrics", "wall_seconds"), column("tags", "status")])
    return {
        "searchFilter": f"params.dataset = '{dataset}'",  # params, so runs logged before the tags existed match
        "orderByKey": column("tags", "mlflow.runName"),
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,  # this order, not MLflow's (metrics, then params, then tags, each alphabetical)
        "runsHiddenMode": "SHOW_ALL",
    }


def ui_links(base_url: str, views: list[tuple[str, str, str, int]]) -> list[str]:
    """One line per saved view: the experiment, the dataset, the run count and the link that opens it."""
    return [f"{name}: {dataset} ({count} runs)  {base_url}/#/experiments/{exp_id}/runs?viewStateShareKey="
            f"{dataset}&{WORKFLOW_QUERY}" for name, exp_id, dataset, count in views]


def serve_ui(uri: str, host: str, port: int, on_ready=None, ready_timeout: float = 300.0) -> int:
    """Run ``mlflow ui`` on ``uri`` until it exits or this process gets SIGTERM, SIGINT or SIGHUP; then end the
    server's whole process group (it runs in its own session, so its workers go with it and a terminal's
    Ctrl-C reaches only us). ``on_ready()`` is called once ``/health`` answers. Returns the server's exit
    status, or 0 when stopped by a signal."""
    import signal
    import subprocess
    import sys
    import urllib.request

    stop: list[int] = []
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    # Installed before the server starts: a signal that arrives while it starts is seen by the loop below.
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in stops}
    proc = None
    try:
        # One worker: a UI for one person, and each further worker imports mlflow again (seconds on busy cores).
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
             "--workers", "1"],
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, start_new_session=True)
        ready = on_ready is None
        deadline = time.monotonic() + ready_timeout
        health = f"http://{'[' + host + ']' if ':' in host else host}:{port}/health"
        while not stop:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if not ready and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(health, timeout=1) as reply:
                        ready = reply.status == 200
                except OSError:
                    pass
                if ready:
                    on_ready()
        return 0
    finally:
        if proc is not None:
            end_process_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def end_process_group(proc, grace: float = 10.0) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL whatever is left after ``grace`` seconds."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the group is gone
        deadline = time.monotonic() + wait
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)  # reap the leader, so only live members (or others' zombies) keep the group
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


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


def run_tags(run, model) -> dict[str, str]:
    """The tags a run is created with: what it is (to filter and group by), its provenance, what its curves are,
    its colour and its description. ``run`` is the resolved RunConfig, ``model`` the built GenerativeModel."""
    import torch

    from . import __version__

    validation = "validation NLL (nats/image)" if model.validation_is_nll else "the family's validation score"
    return {
        "dataset": run.dataset,
        "model": run.label,
        "base_model": run.model,
        "family": model.family,
        "likelihood": model.likelihood.value,
        "seed": str(run.seed),
        "grid": run.experiment,
        "train_loss": model.loss_name,
        "val_nats": validation,
        "git_commit": git_commit(),
        "dgmbench_version": __version__,
        "torch_version": torch.__version__,
        "mlflow.runColor": run_color(run.model, run.label, run.seed),
        "mlflow.note.content": (
            f"**{run.label}** ({model.family}) on **{run.dataset}**, seed {run.seed}.\n\n"
            f"Curves (step = epoch): `train_loss` is the {model.loss_name}; `val_nats` is the {validation}"
            + ("; `val_bpd` the same in bits/dim" if model.validation_is_nll else "")
            + "; `wall_seconds` is wall time since the start (its last value: the training time).\n\n"
            "Test metrics (step = evaluation): "
            + "; ".join(f"`{k}` {v}" for k, v in HEADLINE_METRICS.items())
            + ". Everything else is in the `metrics.json` artifact."),
    }


def run_color(base_model: str, label: str, seed: int) -> str:
    """``#rrggbb``: the family's palette colour (by its place among the registered families; a variant of a
    family is shifted to another slot by its name), mixed 22% further toward white for each seed after the
    first (seed mod 4), so seeds stay distinguishable but grouped."""
    import zlib

    from .models import MODELS

    names = MODELS.names()
    slot = names.index(base_model) if base_model in names else zlib.crc32(base_model.encode())
    if label != base_model:  # a variant (e.g. vae-beta4): its own colour, stable across processes
        slot += 1 + zlib.crc32(label.encode()) % (len(PALETTE) - 1)
    rgb = [int(PALETTE[slot % len(PALETTE)][i : i + 2], 16) for i in (1, 3, 5)]
    t = 0.22 * (seed % 4)
    return "#" + "".join(f"{round(c + (255 - c) * t):02x}" for c in rgb)


def epoch_metrics(row: dict) -> dict[str, float]:
    """One row of a training curve (curve.csv) as the metrics logged at step = its epoch: every column but
    ``epoch``, under its own name, except the cumulative wall time ``seconds``, logged as ``wall_seconds`` (after
    the curves in MLflow's by-name order; its last value is the training time)."""
    return {("wall_seconds" if k == "seconds" else k): v for k, v in row.items() if k != "epoch"}


def headline_metrics(results: dict) -> dict[str, float]:
    """The headline test numbers (:data:`HEADLINE_METRICS`) from an evaluation's typed results (evaluator name →
    Result); a number an evaluator did not produce is absent, never NaN."""
    out: dict[str, float | None] = {}
    if (lik := results.get("likelihood")) is not None:
        out["test_nll_bpd"] = lik.nll_bpd
    if (comp := results.get("compression")) is not None and comp.coded:
        out["test_coded_bpd"] = comp.coded_bpd
    if (quality := results.get("sample_quality")) is not None:
        out["test_fd"] = quality.fd
    if (probe := results.get("probe")) is not None:
        out["test_probe_acc"] = probe.linear_test_acc
    if (sampling := results.get("sampling")) is not None:
        out["test_samples_per_s"] = sampling.best()[1]
    return {k: float(v) for k, v in out.items() if v is not None and v == v}


def git_commit() -> str:
    """The repository's HEAD commit (with "-dirty" if there are uncommitted changes), or "unknown"."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"
