"""Kill -9 a training job and rerun it: it resumes from last.pt, ends where an uninterrupted run ends, and MLflow
shows one run with one clean per-epoch history. Once through the CLI, once through Snakemake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_EVAL

from dgmbench.config import eval_settings
from dgmbench.evaluate import without_timing

REPO = Path(__file__).resolve().parents[1]
# Long enough to kill mid-run (all 1000 digits, ~0.5 s an epoch), short enough for CI.
MAX_EPOCHS = 8
KILL_AT = 3  # kill once last.pt holds at least this many epochs
SETS = [f"train.max_epochs={MAX_EPOCHS}", "train.checkpoint_every=1", "train.patience=0", "train.batch_size=32",
        "train.num_val=128", "device=cpu"]
EVAL = {"likelihood": {"iwae_k": 8, "iwae_repeats": 2}}  # the grid's eval: section of these tests


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _epoch_in(last: Path) -> int:
    """Epochs recorded in a resume checkpoint (0 while it does not exist yet or is being replaced)."""
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["state"]["epoch"])
    except Exception:
        return 0


def _kill_when(proc: subprocess.Popen, last: Path, epoch: int, timeout: float = 240) -> int:
    """SIGKILL ``proc``'s whole process group once ``last`` holds ≥ ``epoch`` epochs; returns that epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"job ended (rc {proc.returncode}) before it could be killed: {out[-2000:]}")
        seen = _epoch_in(last) if last.exists() else 0
        if seen >= epoch:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return seen
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the job never reached the kill epoch")


def _train_cmd(out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "dgmbench", "train", "--dataset", "digits", "--model", "vae", "--seed", "0",
           "--out", str(out)]
    for s in SETS:
        cmd += ["--set", s]
    return cmd


def _mlflow_runs(workdir: Path, experiment: str = "dgmbench"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=100)


def _comparable(metrics: dict) -> dict:
    out = without_timing(metrics)
    out["run"].pop("git_commit", None)  # provenance, not a result (colleagues commit while tests run)
    return out


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_result(tmp_path, monkeypatch):
    from dgmbench.config import load_grid, resolve_run
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    # The reference: one uninterrupted run (in this process, its own MLflow store).
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    run = resolve_run(load_grid(None), dataset="digits", model="vae", seed=0, sets=SETS)
    run.tracking_uri = f"sqlite:///{ref_dir / 'mlflow.db'}"
    train(run, ref_dir / "run", progress=False)
    ref_metrics = evaluate(ref_dir / "run", only=["training", "likelihood"], eval_config=eval_settings({"eval": EVAL}))

    # The killed run, through the CLI in a subprocess, then rerun.
    work = tmp_path / "killed"
    work.mkdir()
    out = work / "run"
    proc = subprocess.Popen(_train_cmd(out), cwd=work, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed_at = _kill_when(proc, out / "last.pt", KILL_AT)
    assert not (out / "checkpoint.pt").exists(), "the job finished before the kill; raise MAX_EPOCHS"
    assert KILL_AT <= killed_at < MAX_EPOCHS

    rerun = subprocess.run(_train_cmd(out), cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    reference = torch.load(ref_dir / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)

    # It resumed (did not start over) at an epoch ≥ the one seen at the kill.
    client, runs = _mlflow_runs(work)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for one training job"
    resumed_from = int(runs[0].data.tags["resumed_from_epoch"])
    assert killed_at <= resumed_from < MAX_EPOCHS
    assert saved["record"]["epochs_run"] == MAX_EPOCHS

    # Same weights, same curve, same metrics as the uninterrupted run.
    for k, v in reference["model_state"].items():
        assert torch.equal(saved["model_state"][k], v), f"weights differ in {k}"
    strip = lambda curve: [{k: v for k, v in row.items() if k != "seconds"} for row in curve]  # noqa: E731
    assert strip(saved["record"]["curve"]) == strip(reference["record"]["curve"])
    monkeypatch.chdir(work)  # the killed run's MLflow store is ./mlflow of the directory it ran in
    metrics = evaluate(out, only=["training", "likelihood"], eval_config=eval_settings({"eval": EVAL}))
    assert _comparable(metrics) == _comparable(ref_metrics)
    assert len(_mlflow_runs(work)[1]) == 1  # evaluation logged to the training run, not to a new one

    # One clean MLflow history: every epoch once, with the values of the final curve.
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert [h.step for h in sorted(history, key=lambda h: h.step)] == list(range(1, MAX_EPOCHS + 1))
    by_step = {h.step: h.value for h in history}
    for row in saved["record"]["curve"]:
        assert by_step[row["epoch"]] == pytest.approx(row["train_loss"], rel=1e-12)
    wall = sorted(h.step for h in client.get_metric_history(runs[0].info.run_id, "wall_seconds"))
    assert wall == list(range(1, MAX_EPOCHS + 1))  # the step a resume starts from is read from this one
    final = client.get_run(runs[0].info.run_id).data
    assert final.tags["epochs_run"] == str(MAX_EPOCHS) and "epochs_run" not in final.metrics  # a count: a tag


@pytest.mark.slow
def test_snakemake_rerun_resumes_a_killed_job(tmp_path):
    """Kill the whole Snakemake invocation mid-training; the rerun (local profile) resumes the job."""
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        "datasets: [digits]\nmodels: [vae]\nseeds: [0]\ndevice: cpu\nexperiment: resume\n"
        f"train:\n  all: {{max_epochs: {MAX_EPOCHS}, checkpoint_every: 1, patience: 0, batch_size: 32, num_val: 128}}\n"
        f"eval: {json.dumps(TINY_EVAL)}\n"  # the train job also evaluates its run (metrics.pending.json): cheaply
    )
    target = "results/runs/digits/vae/seed0/checkpoint.pt"
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
            "--profile", str(REPO / "workflow" / "profiles" / "local"), "--configfile", str(cfg), "--cores", "1"]
    proc = subprocess.Popen(base + [target], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed_at = _kill_when(proc, tmp_path / "results/runs/digits/vae/seed0/last.pt", KILL_AT)
    # A killed Snakemake leaves its lock behind; --unlock releases it (documented in the README).
    subprocess.run(base + ["--unlock"], cwd=tmp_path, env=_env(), capture_output=True, timeout=120, check=True)
    # The jobs journal what they log (tracking_live: false); the track job writes it into the store.
    rerun = subprocess.run(base + [target, "results/logs/mlflow-track.log"], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    client, runs = _mlflow_runs(tmp_path, "resume")
    assert len(runs) == 1
    assert killed_at <= int(runs[0].data.tags["resumed_from_epoch"]) < MAX_EPOCHS
    steps = sorted(h.step for h in client.get_metric_history(runs[0].info.run_id, "train_loss"))
    assert steps == list(range(1, MAX_EPOCHS + 1))
    record = torch.load(tmp_path / target, map_location="cpu", weights_only=True)["record"]
    assert record["epochs_run"] == MAX_EPOCHS and record["status"] == "ok"


def test_divergence_is_data(capsys, isolated_cwd):
    """A run whose loss goes non-finite ends as `diverged` with its epoch, in MLflow and in the tables, while
    the other runs of the grid complete."""
    from dgmbench.cli import main

    small = ["--set", "train.max_epochs=3", "--set", "train.num_train=128", "--set", "train.num_val=64",
             "--set", "device=cpu"]
    grid = isolated_cwd / "grid.yaml"
    grid.write_text(yaml.safe_dump({"eval": EVAL}))
    runs = isolated_cwd / "results" / "runs" / "digits" / "vae"
    assert main(["train", "--dataset", "digits", "--model", "vae", "--seed", "0", *small,
                 "--out", str(runs / "seed0")]) == 0
    assert main(["train", "--dataset", "digits", "--model", "vae", "--seed", "1", *small, "--set", "train.lr=1e6",
                 "--out", str(runs / "seed1")]) == 0  # divergence is a result, not an error
    assert "diverged after 1/3 epochs" in capsys.readouterr().out  # the summary line: epochs run / max
    for seed in (0, 1):
        assert main(["evaluate", "--config", str(grid), "--run", str(runs / f"seed{seed}"),
                     "--only", "training", "likelihood"]) == 0
    assert main(["tables", "--runs", "results/runs", "--out", "results"]) == 0

    m = json.loads((runs / "seed1" / "metrics.json").read_text())["run"]
    assert (m["status"], m["diverged_epoch"], m["diverged_reason"]) == ("diverged", 1, "non-finite training loss")
    assert json.loads((runs / "seed0" / "metrics.json").read_text())["run"]["status"] == "ok"

    client, found = _mlflow_runs(isolated_cwd)
    by_seed = {r.data.tags["seed"]: r for r in found}
    assert len(found) == 2 and by_seed["1"].data.tags["status"] == "diverged"
    assert by_seed["1"].info.status == "FAILED" and by_seed["0"].info.status == "FINISHED"
    assert [h.step for h in client.get_metric_history(by_seed["1"].info.run_id, "wall_seconds")] == [1]

    import pandas as pd

    table = pd.read_csv(isolated_cwd / "results" / "tables" / "stability.csv")
    assert table.set_index("model").loc["vae", "failed"] == "1/2 (1 diverged)"
