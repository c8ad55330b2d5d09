"""MLflow made for this suite: only measurements are metrics (the per-epoch curves and a few headline test
numbers), what a run is goes into tags the runs list filters by, experiments open in the model-training view
with a saved view per dataset, each family has its own colour, and `dgmbench ui` takes its server down with it.
Also: importing dgmbench.tracking does not import mlflow (≈ 2 s that `dgmbench --help` and the Snakefile skip)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
EVAL = {"test_subset": {"max_images": 32}, "likelihood": {"iwae_k": 2, "iwae_repeats": 1},
        "probe": {"c_grid": [1.0], "labels_per_class": 2, "cv_folds": 2, "num_train": 64, "max_iter": 20}}


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_importing_tracking_does_not_import_mlflow():
    code = "import sys, dgmbench.tracking; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tiny VAE run on digits, trained and evaluated (likelihood, probe) into its own sqlite store; and the
    store's client. Returns (client, experiment, run, run_dir, store URI)."""
    from mlflow.tracking import MlflowClient

    from dgmbench.config import eval_settings, load_grid, resolve_run
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    root = tmp_path_factory.mktemp("mlflow_view")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    run = resolve_run(load_grid(None), dataset="digits", model="vae", seed=1,
                      sets=[f"train.{k}={v}" for k, v in TINY_TRAIN.items()] + ["device=cpu"])
    run.tracking_uri, run.experiment = uri, "view-test"
    train(run, root / "run", progress=False)
    evaluate(root / "run", only=["likelihood", "probe"], eval_config=eval_settings({"eval": EVAL}))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("view-test")
    (found,) = client.search_runs([exp.experiment_id])
    return client, exp, found, root / "run", uri


def test_only_measurements_are_metrics(store):
    """The metrics are the headline test numbers, each equal to its metrics.json value, and the per-epoch curves
    (each column of curve.csv, one point per epoch); every setting is a param, no param or count is also a
    metric, and the rest of metrics.json is the artifact. By name, the test numbers come first, then the training
    curves, then the time (MLflow orders a run's charts by name)."""
    from dgmbench.tracking import HEADLINE_METRICS, epoch_metrics

    client, _, run, run_dir, _ = store
    with open(run_dir / "curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    curves = epoch_metrics(rows[0])  # curve.csv column → the metric it is logged as
    assert {"train_loss", "val_nats", "val_bpd", "wall_seconds"} <= set(curves)
    assert set(run.data.metrics) == set(curves) | {"test_nll_bpd", "test_probe_acc"}
    assert set(run.data.metrics) - set(curves) <= set(HEADLINE_METRICS)
    for column in set(rows[0]) - {"epoch"}:
        (key,) = epoch_metrics({column: 0.0})
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [int(r["epoch"]) for r in rows]
        assert [m.value for m in history] == pytest.approx([float(r[column]) for r in rows], rel=1e-12)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_nll_bpd"] == pytest.approx(metrics["likelihood"]["nll_bpd"], rel=1e-12)
    assert run.data.metrics["test_probe_acc"] == pytest.approx(metrics["probe"]["linear_test_acc"], rel=1e-12)
    assert not set(run.data.metrics) & set(run.data.params)
    assert run.data.params["train.max_epochs"] == str(TINY_TRAIN["max_epochs"])
    assert run.data.tags["epochs_run"] == str(TINY_TRAIN["max_epochs"]) and "epochs_run" not in run.data.metrics
    assert {"metrics.json", "curve.csv", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    by_name = sorted(run.data.metrics)
    tests, trains = [k for k in by_name if k.startswith("test_")], [k for k in by_name if k.startswith("train_")]
    assert by_name[: len(tests)] == tests and by_name[len(tests)] == trains[0] and by_name[-1] == "wall_seconds"


def test_a_run_says_what_it_is_in_tags(store):
    """dataset, model, family, seed and grid are tags (what the runs list filters and groups by); the curves'
    meaning is written on the run; the experiment is a model-training one."""
    from dgmbench.models import MODELS

    _, exp, run, _, _ = store
    tags = run.data.tags
    assert (tags["dataset"], tags["model"], tags["seed"], tags["grid"]) == ("digits", "vae", "1", "view-test")
    assert tags["family"] == MODELS.get("vae").family and tags["train_loss"] == MODELS.get("vae").loss_name
    assert re.fullmatch(r"#[0-9a-f]{6}", tags["mlflow.runColor"])
    assert MODELS.get("vae").loss_name in tags["mlflow.note.content"]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_each_family_has_its_own_colour_and_seeds_shade_it():
    from dgmbench.models import MODELS
    from dgmbench.tracking import PALETTE, run_color

    families = MODELS.names()
    firsts = [run_color(m, m, 0) for m in families]
    assert len(set(firsts)) == min(len(families), len(PALETTE))  # no two families share a colour
    for m in families:
        shades = [run_color(m, m, s) for s in range(4)]
        assert len(set(shades)) == 4 and not set(shades[1:]) & set(firsts)
        # lighter with each seed: the channel sum grows
        sums = [sum(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in shades]
        assert sums == sorted(sums)
    assert run_color("vae", "vae", 0) == run_color("vae", "vae", 4)  # seed mod 4: stable, bounded lightness


def test_saved_view_selects_the_datasets_runs_with_headline_columns(store):
    """prepare_ui saves a view per dataset in each dgmbench experiment; its filter and sort are valid MLflow search
    syntax (checked by MLflow's own parser) and select exactly that dataset's runs; its columns name metrics the
    runs have."""
    from dgmbench.tracking import VIEW_TAG, Tracker

    client, exp, run, _, uri = store
    views = Tracker(uri, None).prepare_ui()
    assert ("view-test", exp.experiment_id, "digits", 1) in views
    state = json.loads(client.get_experiment(exp.experiment_id).tags[VIEW_TAG + "digits"])
    found = client.search_runs([exp.experiment_id], filter_string=state["searchFilter"],
                               order_by=[state["orderByKey"] + " ASC"])
    assert [r.info.run_id for r in found] == [run.info.run_id]
    assert not client.search_runs([exp.experiment_id], filter_string=state["searchFilter"].replace("digits", "x"))
    columns = {c.split(".", 1)[1].strip("`") for c in state["selectedColumns"] if c.startswith("metrics.")}
    assert {"test_nll_bpd", "test_probe_acc", "wall_seconds"} <= columns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_ui_takes_its_server_down_on_sigterm(store):
    """`dgmbench ui` on a free port: once /health answers, it prints the saved view's link; SIGTERM ends it,
    its server's whole process group, and frees the port (bounded waits; 127.0.0.1 only)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dgmbench", "ui", "--tracking-uri", store[4],
                             "--port", str(port)], env=_env(), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []  # its stderr, read as it comes (it prints the links once the server answers)
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    server_group = None
    try:
        deadline = time.monotonic() + 420  # the server needs ~9 s alone; minutes when the cores are shared many ways
        while True:
            assert proc.poll() is None, f"dgmbench ui ended early: {''.join(lines)[-2000:]}"
            assert time.monotonic() < deadline, f"no /health or no links: {''.join(lines)[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200 and any("viewStateShareKey=" in line for line in lines):
                        break
            except OSError:
                pass
            time.sleep(0.5)
        link = next(line for line in lines if "viewStateShareKey=" in line)
        assert f"http://127.0.0.1:{port}/#/experiments/" in link and "viewStateShareKey=digits" in link
        (server,) = _children(proc.pid)
        server_group = os.getpgid(server)
        assert server_group not in (os.getpgid(proc.pid), os.getpgrp())  # its own group, not ours or the CLI's
        assert _group_members(server_group)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 0  # seconds alone; minutes when the cores are shared many ways
        assert _group_members(server_group) == []
        with socket.socket() as s:  # nothing listens there any more
            assert s.connect_ex(("127.0.0.1", port)) != 0
        with socket.socket() as s:  # and a new server can bind it (SO_REUSEADDR: as servers do, past TIME_WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        for group in (server_group, proc.pid):
            if group is not None and _group_members(group):
                os.killpg(group, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
