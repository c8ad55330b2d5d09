"""The smoke grid end to end through Snakemake in a temporary directory, then a check that the tables, the
metrics files and the MLflow runs exist and agree with each other."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_smoke_pipeline_outputs_agree(smoke_run):
    cfg = yaml.safe_load(SMOKE.read_text())
    runs = smoke_run / "results" / "runs"
    metrics = {}
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            d = runs / "digits" / model / f"seed{seed}"
            for name in ("checkpoint.pt", "config.yaml", "curve.csv", "metrics.json", "mlflow_run_id"):
                assert (d / name).exists(), f"missing {d / name}"
            metrics[(model, seed)] = json.loads((d / "metrics.json").read_text())

    # The likelihood table holds exactly the likelihood families, with the values of their metrics.json.
    table = pd.read_csv(smoke_run / "results" / "tables" / "likelihood.csv")
    lik_models = sorted(m for (m, _), v in metrics.items() if v["likelihood"]["type"] != "none")
    assert sorted(table["model"]) == lik_models
    for _, row in table.iterrows():
        vals = [v["likelihood"]["nll_nats"] for (m, _), v in metrics.items() if m == row["model"]]
        assert float(str(row["NLL (nats/image)"]).split(" ")[0]) == pytest.approx(sum(vals) / len(vals), abs=0.006)
    assert (smoke_run / "results" / "tables" / "likelihood.md").read_text().count("\n| digits") == len(lik_models)

    # MLflow: one FINISHED run per (model, seed), named as documented, holding the same test metrics.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(cfg["experiment"])
    found = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(found) == len(metrics)
    by_name = {r.info.run_name: r for r in found}
    for (model, seed), m in metrics.items():
        r = by_name[f"{model}-digits-seed{seed}"]
        assert r.info.status == "FINISHED"
        assert r.data.tags["seed"] == str(seed) and r.data.tags["git_commit"]
        assert r.data.params["hparams." + next(iter(yaml.safe_load((runs / "digits" / model / f"seed{seed}" / "config.yaml").read_text())["hparams"]))]
        if m["likelihood"]["type"] != "none":
            assert math.isclose(r.data.metrics["test.likelihood.nll_nats"], m["likelihood"]["nll_nats"], rel_tol=1e-9)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"metrics.json", "curve.csv", "config.yaml"} <= artifacts
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert [h.step for h in history] == list(range(1, len(history) + 1)) and len(history) >= 1


@pytest.mark.slow
def test_rerun_is_a_no_op(smoke_run):
    """Snakemake, not the package, decides what is stale: a second run finds nothing to do."""
    proc = snakemake(smoke_run, "--cores", "2", "--configfile", str(SMOKE), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_the_workflow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [digits]\nmodels: [vae]\nseeds: [0]\nlearning_rate: 3\n")
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(bad), "--dry-run", timeout=120)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stdout + proc.stderr


def test_evaluate_config_replaces_the_eval_settings_saved_at_training(isolated_cwd):
    """A grid's eval: section changed after training applies to `dgmbench evaluate --config` (what the evaluate
    rule passes), while a plain `evaluate` keeps the checkpoint's settings."""
    from dgmbench.cli import main
    from dgmbench.metrics.ood import OODConfig

    old, new = isolated_cwd / "old.yaml", isolated_cwd / "new.yaml"
    old.write_text("eval:\n  likelihood: {iwae_k: 3, iwae_repeats: 2, max_images: 60}\n")
    new.write_text("eval:\n  likelihood: {iwae_k: 4, iwae_repeats: 2, max_images: 25}\n")
    run = isolated_cwd / "results" / "runs" / "vae"
    assert main(["train", "--config", str(old), "--dataset", "digits", "--model", "vae", "--seed", "0",
                 "--set", "train.max_epochs=1", "--set", "train.num_train=64", "--out", str(run)]) == 0

    assert main(["evaluate", "--run", str(run), "--only", "likelihood"]) == 0
    lik = json.loads((run / "metrics.json").read_text())
    assert (lik["likelihood"]["num_test"], lik["likelihood"]["estimator"]) == (60, "IWAE-3")

    assert main(["evaluate", "--config", str(new), "--run", str(run), "--only", "likelihood"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["likelihood"]["num_test"], metrics["likelihood"]["estimator"]) == (25, "IWAE-4")
    assert metrics["run"]["eval_settings"]["likelihood"]["max_images"] == 25
    assert metrics["run"]["eval_settings"]["ood"] == dataclasses.asdict(OODConfig())  # defaults for the rest
