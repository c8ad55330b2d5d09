"""The smoke grid end to end through Snakemake in a temporary directory, then a check that the tables, the
metrics files and the MLflow runs exist and agree with each other."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from conftest import SMOKE, snakemake


@pytest.mark.slow
def test_smoke_pipeline_outputs_agree(smoke_run):
    cfg = yaml.safe_load(SMOKE.read_text())
    runs = smoke_run / cfg["runs_dir"]
    out = smoke_run / cfg["results_dir"]
    metrics = {}
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            d = runs / "digits" / model / f"seed{seed}"
            for name in ("checkpoint.pt", "config.yaml", "curve.csv", "metrics.json", "mlflow_run_id"):
                assert (d / name).exists(), f"missing {d / name}"
            metrics[(model, seed)] = json.loads((d / "metrics.json").read_text())

    # The likelihood table holds exactly the likelihood families, with the values of their metrics.json.
    table = pd.read_csv(out / "tables" / "likelihood.csv")
    lik_models = sorted(m for (m, _), v in metrics.items() if v["likelihood"]["type"] != "none")
    models = table[table["family"] != "baseline (no model)"]
    assert sorted(models["model"]) == lik_models
    assert sorted(table[table["family"] == "baseline (no model)"]["model"]) == ["per-pixel histogram", "uniform"]
    for _, row in models.iterrows():
        vals = [v["likelihood"]["nll_nats"] for (m, _), v in metrics.items() if m == row["model"]]
        assert float(str(row["NLL (nats/image)"]).split(" ")[0]) == pytest.approx(sum(vals) / len(vals), abs=0.006)
    assert (out / "tables" / "likelihood.md").read_text().count("\n| digits") == len(lik_models) + 2
    # Every evaluator scored the same test images, and every exact model's ideal code length is its NLL there.
    subsets = {json.dumps(v["test_subset"], sort_keys=True) for v in metrics.values()}
    assert len(subsets) == 1 and json.loads(subsets.pop())["num_images"] == cfg["eval"]["test_subset"]["max_images"]
    for (model, _), m in metrics.items():
        for name in ("likelihood", "compression", "lossy", "ood"):
            if name in m:
                assert m[name].get("images_sha1", m[name].get("num_in")) is not None
        if m["likelihood"]["type"] == "exact" and m["compression"]["coded"]:
            assert m["compression"]["images_sha1"] == m["likelihood"]["images_sha1"]
            assert m["compression"]["ideal_bpd"] == pytest.approx(m["likelihood"]["nll_bpd"], rel=1e-3), model
    # No table cell is an unformatted missing value: absent inputs say so in words.
    for csv in (out / "tables").glob("*.csv"):
        text = csv.read_text()
        assert ",nan," not in text.lower() and ",None," not in text, csv.name

    # MLflow: one FINISHED run per (model, seed), named as documented, holding the same test metrics, and no
    # metric but the headline test numbers and the per-epoch curves (the rest is the metrics.json artifact).
    from mlflow.tracking import MlflowClient

    from dgmbench.tracking import HEADLINE_METRICS, epoch_metrics

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
            assert math.isclose(r.data.metrics["test_nll_bpd"], m["likelihood"]["nll_bpd"], rel_tol=1e-9)
        curve = pd.read_csv(runs / "digits" / model / f"seed{seed}" / "curve.csv")
        assert set(r.data.metrics) <= set(HEADLINE_METRICS) | set(epoch_metrics(dict.fromkeys(curve.columns)))
        assert r.data.tags["dataset"] == "digits" and r.data.tags["model"] == model
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"metrics.json", "curve.csv", "config.yaml"} <= artifacts
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert [h.step for h in history] == list(range(1, len(history) + 1)) and len(history) >= 1
        assert r.data.tags["eval.test_subset.max_images"] == str(cfg["eval"]["test_subset"]["max_images"])


@pytest.mark.slow
def test_a_deleted_section_makes_its_cells_say_not_measured(smoke_run, tmp_path):
    """Tables read typed results: a metrics.json without its likelihood section gives "not measured" in the
    matrix, and the row no longer claims to agree with the lecture."""
    import shutil

    from dgmbench.cli import main

    cfg = yaml.safe_load(SMOKE.read_text())
    runs = tmp_path / "runs"
    shutil.copytree(smoke_run / cfg["runs_dir"], runs)
    path = runs / "digits" / "arm" / "seed0" / "metrics.json"
    m = json.loads(path.read_text())
    del m["likelihood"]
    path.write_text(json.dumps(m))
    assert main(["tables", "--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    matrix = pd.read_csv(tmp_path / "out" / "tables" / "matrix.csv")
    arm = matrix[matrix["model"] == "arm"].iloc[0]
    assert arm["likelihood"] == "not measured" and arm["vs lecture"] != "agrees"
    assert arm["lossless compression"].startswith("yes")  # its own result holds the NLL it was coded against
    lik = pd.read_csv(tmp_path / "out" / "tables" / "likelihood.csv")
    assert "arm" not in set(lik["model"])  # no likelihood row is made up for it


@pytest.mark.slow
def test_rerun_is_a_no_op(smoke_run):
    """Snakemake, not the package, decides what is stale: a second run finds nothing to do; the smoke grid plans
    nothing under the committed results/tables or results/figures."""
    proc = snakemake(smoke_run, "--cores", "2", "--configfile", str(SMOKE), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_the_workflow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [digits]\nmodels: [vae]\nseeds: [0]\nlearning_rate: 3\n")
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(bad), "--dry-run", timeout=120)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stdout + proc.stderr


def test_evaluate_settings_come_from_the_grid_and_only_keeps_other_sections(isolated_cwd):
    """Evaluation settings are the grid's eval: section at evaluation time (`evaluate --config`, what the evaluate
    rule passes); `--only X` recomputes X, reuses what X requires, keeps every other section, and is refused when
    the test subset changed; MLflow tags carry the settings used and each metric has one value per evaluation."""
    from mlflow.tracking import MlflowClient

    from dgmbench.cli import main

    old, new, other = (isolated_cwd / f"{n}.yaml" for n in ("old", "new", "other"))
    old.write_text("eval:\n  test_subset: {max_images: 60}\n  likelihood: {iwae_k: 3, iwae_repeats: 2}\n")
    new.write_text("eval:\n  test_subset: {max_images: 60}\n  likelihood: {iwae_k: 4, iwae_repeats: 2}\n")
    other.write_text("eval:\n  test_subset: {max_images: 25}\n")
    run = isolated_cwd / "results" / "runs" / "vae"
    assert main(["train", "--config", str(old), "--dataset", "digits", "--model", "vae", "--seed", "0",
                 "--set", "train.max_epochs=1", "--set", "train.num_train=64", "--out", str(run)]) == 0
    assert "eval" not in yaml.safe_load((run / "config.yaml").read_text())  # training never carries them

    assert main(["evaluate", "--config", str(old), "--run", str(run), "--only", "likelihood"]) == 0
    first = json.loads((run / "metrics.json").read_text())
    assert (first["likelihood"]["num_images"], first["likelihood"]["estimator"]) == (60, "IWAE-3")
    assert first["test_subset"]["num_images"] == 60 and first["run"]["evaluation_index"] == 0

    assert main(["evaluate", "--config", str(old), "--run", str(run), "--only", "compression"]) == 0
    second = json.loads((run / "metrics.json").read_text())
    assert second["likelihood"] == first["likelihood"]  # required, reused from the file, not erased or redone
    assert second["compression"]["model_nll_bpd"] == first["likelihood"]["nll_bpd"]
    assert second["run"]["evaluated"] == {"compression": True, "likelihood": True}

    assert main(["evaluate", "--config", str(new), "--run", str(run), "--only", "likelihood"]) == 0
    third = json.loads((run / "metrics.json").read_text())
    assert third["likelihood"]["estimator"] == "IWAE-4" and "compression" in third
    assert third["run"]["eval_settings"]["likelihood"]["iwae_k"] == 4 and third["run"]["evaluation_index"] == 2

    before = (run / "metrics.json").read_bytes()
    assert main(["evaluate", "--config", str(other), "--run", str(run), "--only", "likelihood"]) == 2
    assert (run / "metrics.json").read_bytes() == before  # refused: the kept sections are on other images

    client = MlflowClient(tracking_uri=f"sqlite:///{isolated_cwd / 'mlflow' / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    mlrun = client.get_run(run_id)
    assert mlrun.data.tags["eval.likelihood.iwae_k"] == "4" and "eval.likelihood.iwae_k" not in mlrun.data.params
    steps = [h.step for h in client.get_metric_history(run_id, "test_nll_bpd")]
    assert steps == [0, 1, 2]  # one value per evaluation
