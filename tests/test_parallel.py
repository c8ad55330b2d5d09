"""Parallel load: a grid run with `--cores 8` on a 2-core machine (8 jobs at once, four per core), against the
default sqlite store and against an `mlflow server` this test starts on 127.0.0.1, with `tracking_live: true` (each
job writes the store as it runs; the default journal, written by one final job, has no concurrent writers: see
test_journal.py and the smoke pipeline). Every run must be recorded exactly once, with its whole per-epoch history,
its test metrics and its artifacts.

What loads the store is the jobs' number and overlap, not their size: training and evaluation are the smallest
that still produce every section (2 epochs on 48 images, the cheapest evaluator settings), so a job is mostly
its process start and its MLflow traffic, and each test takes about a minute on 2 cores."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_EVAL, TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
EPOCHS = TINY_TRAIN["max_epochs"]
SEEDS = 8  # jobs in flight at once with --cores 8 (threads: 1 per job)
EXPECTED_ARTIFACTS = {"metrics.json", "curve.csv", "config.yaml", "samples.png"}


def grid(tmp: Path, seeds: int, tracking_uri: str | None) -> Path:
    cfg = {
        "datasets": ["digits"], "models": ["vae"], "seeds": list(range(seeds)), "device": "cpu", "threads": 1,
        "experiment": "parallel", "tracking_uri": tracking_uri,
        "tracking_live": True,  # every job writes the store as it runs: the concurrent writers under test here
        "train": {"all": TINY_TRAIN}, "eval": TINY_EVAL,
    }
    path = tmp / "grid.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def snakemake(workdir: Path, cfg: Path, timeout: int = 540) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "8", "--configfile", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    if proc.returncode != 0:
        logs = "\n".join(f"{p}: {p.read_text()[-1500:]}" for p in (workdir / "results" / "logs").glob("*/*/*/*.log"))
        pytest.fail(proc.stdout[-2000:] + proc.stderr[-3000:] + logs[-6000:])


def check_recorded_once(uri: str, workdir: Path, seeds: int) -> None:
    from mlflow.tracking import MlflowClient

    from dgmbench.tracking import epoch_metrics

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("parallel")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(f"vae-digits-seed{s}" for s in range(seeds)), names  # each once, none extra
    for r in runs:
        run_dir = workdir / "results" / "runs" / "digits" / "vae" / f"seed{r.data.tags['seed']}"
        assert (run_dir / "mlflow_run_id").read_text().strip() == r.info.run_id
        assert r.info.status == "FINISHED"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert r.data.metrics["test_nll_bpd"] == pytest.approx(metrics["likelihood"]["nll_bpd"], rel=1e-12)
        with open(run_dir / "curve.csv") as fh:
            per_epoch = [k for k in next(csv.reader(fh)) if k != "epoch"]
        assert {"train_loss", "val_nats", "seconds"} <= set(per_epoch), per_epoch
        for key in epoch_metrics(dict.fromkeys(per_epoch)):  # every curve, one point per epoch: none lost or twice
            steps = sorted(h.step for h in client.get_metric_history(r.info.run_id, key))
            assert steps == list(range(1, EPOCHS + 1)), (r.info.run_name, key, steps)
        assert r.data.params["train.max_epochs"] == str(EPOCHS)
        assert EXPECTED_ARTIFACTS <= {a.path for a in client.list_artifacts(r.info.run_id)}


@pytest.mark.heavy
def test_eight_jobs_on_two_cores_sqlite(tmp_path):
    snakemake(tmp_path, grid(tmp_path, SEEDS, None))
    check_recorded_once(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", tmp_path, SEEDS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1:<free port>, its store and artifacts in the test's directory; stopped after."""
    port = free_port()
    store, artifacts = tmp_path / "server" / "mlflow.db", tmp_path / "server" / "artifacts"
    artifacts.mkdir(parents=True)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=20)
        log.close()


@pytest.mark.heavy
def test_eight_jobs_on_two_cores_mlflow_server(tmp_path, mlflow_server):
    url, artifacts = mlflow_server
    snakemake(tmp_path, grid(tmp_path, SEEDS, url))
    check_recorded_once(url, tmp_path, SEEDS)
    # Artifacts went through the server into its artifact store (the test's directory), not into ./mlflow.
    uploaded = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert EXPECTED_ARTIFACTS <= uploaded
    assert len(list(artifacts.rglob("metrics.json"))) == SEEDS
    assert not (tmp_path / "mlflow").exists()
