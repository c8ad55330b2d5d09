"""Deferred MLflow logging (dgmbench/journal.py): a run journalled and replayed by `dgmbench track` holds in the store
what the same run logged live holds (params, tags, every metric's steps and values, artifacts, status); a replay
is incremental and exact when repeated, killed half way or run against a reset store; a journal is data: a
hostile or broken one stops `dgmbench track` with one line and exit status 2, and writes nothing of its own."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import TINY_TRAIN, dgmbench_process

EVAL = {"test_subset": {"max_images": 32}, "likelihood": {"iwae_k": 2, "iwae_repeats": 1},
        "probe": {"c_grid": [1.0], "labels_per_class": 2, "cv_folds": 2, "num_train": 64, "max_iter": 20}}
TIMINGS = {"wall_seconds", "test_samples_per_s"}  # measured anew by each process: compared by step, not value


def _run(uri: str, experiment: str):
    from dgmbench.config import load_grid, resolve_run

    run = resolve_run(load_grid(None), dataset="digits", model="vae", seed=3,
                      sets=[f"train.{k}={v}" for k, v in TINY_TRAIN.items()] + ["device=cpu"])
    run.tracking_uri, run.experiment = uri, experiment
    return run


def _train_and_evaluate(root, name: str, journal: bool):
    from dgmbench.config import eval_settings
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    uri = f"sqlite:///{root / name / 'mlflow.db'}"
    train(_run(uri, "journal-test"), root / name / "run", progress=False, journal=journal)
    evaluate(root / name / "run", only=["likelihood", "probe"], eval_config=eval_settings({"eval": EVAL}),
             journal=journal)
    return uri, root / name / "run"


def _content(uri: str, run_dir):
    """What the store holds of the run in run_dir: params, tags, metric histories, artifact names, status."""
    from mlflow.tracking import MlflowClient

    from dgmbench.journal import OFFSET_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("journal-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert (run_dir / "mlflow_run_id").read_text().strip() == run.info.run_id
    history = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
               for k in run.data.metrics}
    tags = {k: v for k, v in run.data.tags.items() if k != OFFSET_TAG}
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    return run, dict(run.data.params), tags, history, artifacts


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same tiny run logged live into one store, and journalled then replayed into another."""
    from dgmbench.journal import replay_all

    root = tmp_path_factory.mktemp("journal")
    live = _train_and_evaluate(root, "live", journal=False)
    uri, run_dir = _train_and_evaluate(root, "journal", journal=True)
    assert not (root / "journal" / "mlflow.db").exists() and not (run_dir / "mlflow_run_id").exists()
    # The store named explicitly, as `dgmbench track --tracking-uri` does: a journal's own store must lie under
    # mlflow/ or results/ of the working directory (test_a_journal_may_not_name_a_store_outside_the_project).
    written, problems = replay_all(root / "journal", tracking_uri=uri, progress=lambda s: None)
    assert problems == [] and written == len((run_dir / "mlflow-journal" / "ops.jsonl").read_text().splitlines())
    return live, (uri, run_dir)


def test_replayed_run_holds_what_live_logging_wrote(both):
    (live_uri, live_dir), (uri, run_dir) = both
    live_run, live_params, live_tags, live_history, live_artifacts = _content(live_uri, live_dir)
    run, params, tags, history, artifacts = _content(uri, run_dir)
    assert params.pop("tracking_uri") != live_params.pop("tracking_uri")  # each its own store
    assert params == live_params and len(params) > 10
    assert tags == live_tags and tags["status"] == "ok" and "eval.likelihood.iwae_k" in tags
    assert sorted(history) == sorted(live_history) and {"train_loss", "val_nats", "test_nll_bpd"} <= set(history)
    for key in history:  # deterministic training: the same values at the same steps, timings aside
        steps = [s for s, _ in history[key]]
        assert steps == [s for s, _ in live_history[key]] and len(steps) == len(set(steps)), key
        if key not in TIMINGS:
            assert history[key] == live_history[key], key
    assert artifacts == live_artifacts and {"metrics.json", "curve.csv", "samples.png"} <= set(artifacts)
    assert run.info.status == live_run.info.status == "FINISHED"
    ops = [json.loads(line) for line in (run_dir / "mlflow-journal" / "ops.jsonl").read_text().splitlines()]
    assert run.info.start_time == ops[0]["time"] and run.info.end_time == ops[-1]["time"]  # the job's times


def test_replay_is_incremental_and_exact_when_repeated_or_killed(both, monkeypatch):
    from dgmbench.config import eval_settings
    from dgmbench.evaluate import evaluate
    from dgmbench.journal import replay_all
    from dgmbench.tracking import Tracker

    uri, run_dir = both[1]
    root = run_dir.parent
    assert replay_all(root, tracking_uri=uri, progress=lambda s: None) == (0, [])  # nothing new: nothing written
    ops_file = run_dir / "mlflow-journal" / "ops.jsonl"
    before = len(ops_file.read_text().splitlines())
    evaluate(run_dir, only=["likelihood"], eval_config=eval_settings({"eval": EVAL}), journal=True)  # a second one
    new = len(ops_file.read_text().splitlines()) - before
    assert new > 0

    calls = []

    def dies_on_the_artifact(self, *args, **kwargs):  # a replay killed half way: after a batch, at the artifact
        calls.append(args)
        raise KeyboardInterrupt

    monkeypatch.setattr(Tracker, "log_artifact", dies_on_the_artifact)
    with pytest.raises(KeyboardInterrupt):
        replay_all(root, tracking_uri=uri, progress=lambda s: None)
    assert calls
    monkeypatch.undo()
    written, _ = replay_all(root, tracking_uri=uri, progress=lambda s: None)
    assert 0 < written < new  # only what the killed replay had not written
    *_, history, _ = _content(uri, run_dir)
    assert [s for s, _ in history["test_nll_bpd"]] == [0, 1]  # each evaluation once: no point written twice
    assert [s for s, _ in history["train_loss"]] == list(range(1, TINY_TRAIN["max_epochs"] + 1))


def test_a_reset_store_gets_the_whole_journal_again(both, tmp_path):
    """The store the run was replayed into is gone (here: another, empty one): the whole journal goes into a new run."""
    from dgmbench.journal import replay_all

    _, run_dir = both[1]
    old_id = (run_dir / "mlflow_run_id").read_text()
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    written, problems = replay_all(run_dir.parent, tracking_uri=uri, progress=lambda s: None)
    assert problems == [] and written == len((run_dir / "mlflow-journal" / "ops.jsonl").read_text().splitlines())
    assert (run_dir / "mlflow_run_id").read_text() != old_id  # a new run
    *_, history, _ = _content(uri, run_dir)
    assert [s for s, _ in history["train_loss"]] == list(range(1, TINY_TRAIN["max_epochs"] + 1))
    assert [s for s, _ in history["test_nll_bpd"]] == [0, 1]


def test_a_copy_of_a_run_directory_is_not_replayed(both, tmp_path):
    """seed0.bak/ holds seed0's MLflow id: replaying it would log over seed0's run. Refused, naming the copy."""
    _, run_dir = both[1]
    copy = tmp_path / "runs" / "digits" / "vae" / "seed3.bak"
    shutil.copytree(run_dir, copy)
    proc = dgmbench_process(["track", "--runs", str(tmp_path / "runs"), "--tracking-uri",
                             f"sqlite:///{tmp_path / 'x.db'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "is a copy of the run directory" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.db").exists()


def _journal(tmp_path, lines: list[str], end: str = "\n"):
    run = tmp_path / "runs" / "r"
    (run / "mlflow-journal").mkdir(parents=True)
    (run / "mlflow-journal" / "ops.jsonl").write_text("\n".join(lines) + end)
    return run


START = json.dumps({"op": "start", "time": 1, "run_name": "r", "experiment": "x", "tracking_uri": None,
                    "params": {"a": "1"}, "tags": {}})


@pytest.mark.parametrize("line, says", [
    ('{"op": "exec", "time": 2}', "unknown entry"),
    ('{"op": "artifact", "time": 2, "file": "../../../etc/passwd", "name": "x"}', "outside the journal"),
    ('{"op": "artifact", "time": 2, "file": "/etc/passwd", "name": "x"}', "outside the journal"),
    ('{"op": "artifact", "time": 2, "file": "artifacts/1-x", "name": "../x"}', "not a file name"),
    ('{"op": "metrics", "time": 2, "step": 1, "values": {"loss": "__import__(\'os\')"}}', "not numbers"),
    ("not json", "not a JSON line"),
], ids=["unknown-op", "dotdot-artifact", "absolute-artifact", "dotdot-name", "metric-text", "not-json"])
def test_a_hostile_journal_is_refused_in_one_line(tmp_path, line, says):
    run = _journal(tmp_path, [START, line, json.dumps({"op": "end", "time": 3, "status": "FINISHED"})])
    proc = dgmbench_process(["track", "--runs", str(tmp_path / "runs")], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (error,) = proc.stderr.strip().splitlines()
    assert says in error and "ops.jsonl:2" in error and "move it aside" in error
    assert not (tmp_path / "mlflow").exists() and not (run / "mlflow_run_id").exists()  # nothing written


@pytest.mark.parametrize("kind", ["missing", "symlink"])
def test_an_artifact_must_be_a_file_of_the_journal(tmp_path, kind):
    """An artifact entry whose file is gone, or is a link to a file elsewhere (which would copy that file into the
    artifact store), is refused before anything is written."""
    line = json.dumps({"op": "artifact", "time": 2, "file": "artifacts/1-secret", "name": "secret"})
    run = _journal(tmp_path, [START, line])
    if kind == "symlink":
        (tmp_path / "secret").write_text("not the run's")
        (run / "mlflow-journal" / "artifacts").mkdir()
        (run / "mlflow-journal" / "artifacts" / "1-secret").symlink_to(tmp_path / "secret")
    proc = dgmbench_process(["track", "--runs", str(tmp_path / "runs")], cwd=tmp_path)
    assert proc.returncode == 2 and "ops.jsonl:2" in proc.stderr and "not a file of the journal" in proc.stderr
    assert not (tmp_path / "mlflow").exists()


def test_a_journal_may_not_name_a_store_outside_the_project(tmp_path):
    start = json.loads(START)
    start["tracking_uri"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    _journal(tmp_path, [json.dumps(start)])
    proc = dgmbench_process(["track", "--runs", str(tmp_path / "runs")], cwd=tmp_path)
    assert proc.returncode == 2 and "tracking_uri" in proc.stderr, proc.stderr
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_diverged_runs_infinite_loss_is_replayed_as_logged(tmp_path):
    """A diverging run logs its last epoch's loss as it was, +inf included (live logging does the same; NaN is
    dropped by both): the journal holds it and the store gets it, and the run stays replayable."""
    from mlflow.tracking import MlflowClient

    from dgmbench.journal import Journal, replay_all

    run_dir = tmp_path / "runs" / "r"
    journal = Journal(None, "x")
    journal.start_run(run_dir, "r", {"a": 1}, {})
    journal.log_metrics("journal", {"train_loss": float("inf"), "val_nats": float("nan"), "wall_seconds": 0.5}, step=1)
    journal.end_run("journal", "FAILED")
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    assert replay_all(tmp_path / "runs", tracking_uri=uri, progress=lambda s: None) == (3, [])
    from dgmbench.tracking import Tracker

    live = Tracker(f"sqlite:///{tmp_path / 'live.db'}", "x")  # the same calls, live
    (tmp_path / "live").mkdir()
    run_id = live.start_run(tmp_path / "live", "r", {"a": 1}, {})
    live.log_metrics(run_id, {"train_loss": float("inf"), "val_nats": float("nan"), "wall_seconds": 0.5}, step=1)
    live.end_run(run_id, "FAILED")
    stored = []
    for store in (uri, f"sqlite:///{tmp_path / 'live.db'}"):
        client = MlflowClient(tracking_uri=store)
        (run,) = client.search_runs([client.get_experiment_by_name("x").experiment_id])
        stored.append((run.data.metrics, run.info.status))
    # MLflow's sqlite store keeps +inf as the largest float, whichever way it arrives.
    assert stored[0] == stored[1] == ({"train_loss": sys.float_info.max, "wall_seconds": 0.5}, "FAILED")


def test_a_torn_last_line_is_left_out(tmp_path):
    """A job killed while writing its last entry leaves part of a line; the entries before it replay."""
    from dgmbench.journal import read_ops

    run = _journal(tmp_path, [START, '{"op": "metrics", "time": 2, "st'], end="")
    assert [op["op"] for op in read_ops(run / "mlflow-journal" / "ops.jsonl")] == ["start"]
