"""The train job's evaluation in its own process (``dgmbench train --evaluate-pending``) and its hand-over to the
evaluate job (``dgmbench evaluate --adopt-pending``, dgmbench/pending.py): taken only for the same checkpoint, the
same settings and the same code, and equal to what a fresh process computes."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import TINY_EVAL, TINY_TRAIN, dgmbench_process

from dgmbench.cli import EVAL_ENV, main
from dgmbench.config import run_grid, validate_grid
from dgmbench.evaluate import without_timing
from dgmbench.pending import PENDING, adopt_pending, pending_key


def job_grids(model: str, eval_section: dict) -> tuple[str, str]:
    """The --config-json of the workflow's train job and of its evaluate job (common.smk's job_grid)."""
    grid = validate_grid({"datasets": ["digits"], "models": [model], "seeds": [0], "device": "cpu", "threads": 1,
                          "experiment": "pending", "train": {"all": TINY_TRAIN}, "eval": eval_section})
    train = run_grid(grid, dataset="digits", model=model, seed=0)
    evaluation = run_grid(grid, dataset="digits", model=model, seed=0, evaluation=True)
    return json.dumps(train, sort_keys=True), json.dumps(evaluation, sort_keys=True)


def cli(*argv: str) -> str:
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", out)
        assert main(list(argv)) == 0
    return out.getvalue()


def job(root: Path, *argv: str, **env: str) -> str:
    """``python -m dgmbench ARGV`` in a process of its own with one thread, as a workflow job runs it; its stdout."""
    proc = dgmbench_process(argv, cwd=root, OMP_NUM_THREADS="1", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ARM (its evaluation codes with ANS: the most sensitive to a process's state) trained by the workflow's
    train job command in a process of its own, its evaluation left pending; the evaluate job's --config-json."""
    root = tmp_path_factory.mktemp("pending")
    train_json, eval_json = job_grids("arm", TINY_EVAL)
    run = root / "results" / "runs" / "digits" / "arm" / "seed0"
    printed = job(root, "train", "--config-json", train_json, "--dataset", "digits", "--model", "arm",
                               "--seed", "0", "--out", str(run), "--evaluate-pending",
                               **{EVAL_ENV: json.dumps(TINY_EVAL, sort_keys=True)})
    return {"root": root, "run": run, "eval_json": eval_json, "printed": printed}


def test_the_train_job_leaves_its_evaluation_and_no_metrics_json(trained):
    run = trained["run"]
    assert (run / PENDING).exists() and not (run / "metrics.json").exists()
    assert f"left {run / PENDING} for the evaluate job" in trained["printed"]
    assert "[1/" in trained["printed"]  # the evaluators' progress lines are in the train job's log
    data = json.loads((run / PENDING).read_text())
    assert data["key"] == pending_key(run, json.loads(trained["eval_json"]))
    assert data["metrics"]["timing"]["in_training_process"] is True


@pytest.mark.parametrize("change", ["checkpoint_sha256", "eval_grid", "source_sha256", "garbage"])
def test_a_pending_evaluation_of_anything_else_is_not_taken(trained, tmp_path, change):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    data = json.loads((run / PENDING).read_text())
    if change == "garbage":
        (run / PENDING).write_text("{not json")
    else:
        data["key"][change] = "something else"
        (run / PENDING).write_text(json.dumps(data))
    why = adopt_pending(run, json.loads(trained["eval_json"]))
    assert why is not None and (change in why or "unreadable" in why), why
    assert not (run / "metrics.json").exists() and not (run / PENDING).exists()  # deleted: the job evaluates anew


def test_other_eval_settings_are_not_taken(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    _, other = job_grids("arm", {**TINY_EVAL, "likelihood": {"iwae_k": 3, "iwae_repeats": 1}})
    assert adopt_pending(run, json.loads(other)) == f"{PENDING} not taken: its eval_grid differs"


def test_adopted_evaluation_equals_a_fresh_process_evaluation(trained):
    """The evaluate job adopts the pending file (same checkpoint, settings, code); then a fresh process evaluates
    the run again with the same settings: every number but the timings agrees exactly."""
    run, root = trained["run"], trained["root"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        printed = cli("evaluate", "--config-json", trained["eval_json"], "--run", str(run), "--adopt-pending")
    assert "adopted" in printed and not (run / PENDING).exists()
    adopted = json.loads((run / "metrics.json").read_text())
    assert adopted == json.loads(json.dumps(adopted)) and adopted["run"]["evaluation_index"] == 0
    job(root, "evaluate", "--config-json", trained["eval_json"], "--run", str(run))
    fresh = json.loads((run / "metrics.json").read_text())
    assert fresh["run"]["evaluation_index"] == 1
    for m in (adopted, fresh):
        m["run"].pop("evaluation_index")
        m["run"].pop("git_commit", None)
    assert without_timing(adopted) == without_timing(fresh)
    assert fresh["compression"]["coded"] and fresh["compression"]["round_trip_exact"]  # the ANS code agrees too


def test_without_the_workflow_setting_the_train_job_only_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(EVAL_ENV, raising=False)
    train_json, _ = job_grids("pca", TINY_EVAL)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    cli("train", "--config-json", train_json, "--dataset", "digits", "--model", "pca", "--out", "run",
        "--set", "train.max_epochs=1", "--evaluate-pending")
    assert not (tmp_path / "run" / PENDING).exists() and (tmp_path / "run" / "checkpoint.pt").exists()
    assert "the evaluate job will evaluate" in err.getvalue()


def test_train_then_evaluate_in_one_command(tmp_path, monkeypatch):
    """`dgmbench train --evaluate`: the user's one-process form, writing metrics.json with the grid's settings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "grid.yaml").write_text(json.dumps({"train": {"all": TINY_TRAIN}, "eval": TINY_EVAL}))
    printed = cli("train", "--config", "grid.yaml", "--dataset", "digits", "--model", "pca", "--out", "run",
                  "--set", "train.max_epochs=1", "--evaluate")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"wrote {Path('run') / 'metrics.json'}" in printed
    assert metrics["run"]["eval_settings"]["probe"]["labels_per_class"] == TINY_EVAL["probe"]["labels_per_class"]
    assert metrics["timing"]["in_training_process"] is True and not (tmp_path / "run" / PENDING).exists()
