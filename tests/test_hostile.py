"""Hostile and careless inputs (issue #16), by class:

1. a config cannot run a command (paths and names are data; the Snakemake rules quote every value);
2. one Snakemake invocation cannot change the settings of another's running jobs;
3. one run has one identity (train, evaluate and tables check it; one writer per run directory);
4. values that pass the type check but are out of their domain are refused, never silently wrong;
5. a config writes only under results/ (symlinks followed, the tracking store too; no code from data files);
6. every fixable error is one line, ``dgmbench: error: ...``, exit status 2, no traceback.

Each case asserts the exit status, the one line, and that nothing already computed changed (files hashed before
and after). The Snakemake cases run the real workflow on the smallest grid (pca, one epoch, 48 images).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_EVAL
from dgmbench.cli import EXIT_USER_ERROR, main
from dgmbench.identity import IDENTITY_FILE, LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
FAST = ["--set", "train.max_epochs=1", "--set", "train.num_train=48", "--set", "train.num_val=32",
        "--set", "device=cpu"]
TINY_TRAIN = {"max_epochs": 1, "num_train": 48, "num_val": 32, "batch_size": 16, "patience": 0}


def fails(capsys, *argv: str) -> str:
    """Run the CLI in-process; assert exit status 2, one `dgmbench: error:` line and nothing else on stderr
    but progress, no traceback; return the line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_USER_ERROR, f"exit status {rc} for {argv}: {err[-2000:]}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("dgmbench: error:")]
    assert len(lines) == 1 and len(lines[0]) < 1000, err[-2000:]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file under ``root`` (the writer lock aside: an empty file any command may create)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def write_grid(path: Path, **cfg) -> Path:
    path.write_text(json.dumps({"datasets": ["digits"], "models": ["vae"], "seeds": [0], **cfg}))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def train_run(out: Path, store: str, model: str = "vae", seed: int = 0, *extra: str) -> Path:
    assert main(["train", "--dataset", "digits", "--model", model, "--seed", str(seed), "--out", str(out), *FAST,
                 "--set", f"tracking_uri={store}", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, store):
    """A vae run (trained and evaluated) and an arm run (trained), in the standard layout."""
    root = tmp_path_factory.mktemp("runs")
    vae = train_run(root / "runs" / "digits" / "vae" / "seed0", store)
    arm = train_run(root / "runs" / "digits" / "arm" / "seed0", store, "arm")
    grid = root / "eval.yaml"
    grid.write_text(json.dumps({"eval": TINY_EVAL}))
    assert main(["evaluate", "--run", str(vae), "--config", str(grid)]) == 0
    return {"root": root, "vae": vae, "arm": arm}


# ============================================================= 1. a config cannot run a command
@pytest.mark.parametrize("value", ["results/r$(touch pwned)", "results/my runs", "results/a;touch pwned",
                                   "results/`touch pwned`", "results/*", "results/a\nb", "results/'q'",
                                   "results/r|x", "results/$HOME"])
def test_runs_dir_with_shell_or_glob_characters_is_refused(value, capsys, isolated_cwd):
    cfg = write_grid(isolated_cwd / "grid.yaml", runs_dir=value)
    msg = fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae")
    assert "runs_dir" in msg and "not an allowed path" in msg
    assert not (isolated_cwd / "pwned").exists() and not (isolated_cwd / "results").exists()


@pytest.mark.parametrize("name", ["../../evil", "a/b", "$(touch pwned)", "..", ".hidden", "x" * 101, "a b"])
def test_variant_names_are_directory_names(name, capsys, isolated_cwd):
    cfg = write_grid(isolated_cwd / "grid.yaml", models=[name], variants={name: {"model": "vae"}})
    msg = fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", name, *FAST)
    assert "variant name" in msg and "letters, digits" in msg
    assert not (isolated_cwd / "results").exists() and not (isolated_cwd.parent / "evil").exists()


def test_every_shell_value_in_the_rules_is_quoted():
    """Every {placeholder} in a rule's shell command is quoted (`:q`), but the rule's own constants."""
    import re

    checked = 0
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", text):
            for field in re.findall(r"\{([^{}]+)\}", shell):
                assert field.endswith(":q") or field in ("PYTHON", "threads"), (smk.name, field)
                checked += field.endswith(":q")
    assert checked >= 10  # the train, evaluate and tables commands were found and read


def snakemake(workdir: Path, *args: str, timeout: int = 300, wait: bool = True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["results/r$(touch pwned)", "results/my runs"])
def test_snakemake_refuses_a_runs_dir_that_is_code(value, tmp_path):
    """End to end: the config never reaches a shell; no file is created, nothing is run."""
    cfg = write_grid(tmp_path / "grid.yaml", models=["pca"], runs_dir=value)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg), timeout=120)
    assert proc.returncode != 0
    assert "not an allowed path" in proc.stdout + proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "results").exists()


# ====================================================== 2. one invocation cannot change another's jobs
def test_a_dry_run_writes_nothing(tmp_path):
    """Parsing the workflow writes no file (there is no shared grid-config.yaml any more)."""
    cfg = write_grid(tmp_path / "grid.yaml", models=["pca"])
    proc = snakemake(tmp_path, "-n", "--configfile", str(cfg), timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_second_invocation_cannot_change_a_running_grid(tmp_path):
    """Grid A trains two seeds one after the other; while its first job runs, `snakemake -n` with grid B (another
    learning rate) parses the workflow in the same directory. Both of A's runs train with A's settings, and B
    then sees them as out of date (their settings param differs) instead of as done."""
    targets = [f"results/runs/digits/pca/seed{s}/checkpoint.pt" for s in (0, 1)]
    a = write_grid(tmp_path / "a.yaml", models=["pca"], seeds=[0, 1], device="cpu",
                   train={"all": {**TINY_TRAIN, "lr": 0.001}})
    b = write_grid(tmp_path / "b.yaml", models=["pca"], seeds=[0, 1], device="cpu",
                   train={"all": {**TINY_TRAIN, "lr": 0.002}})
    first = snakemake(tmp_path, "--cores", "1", *targets, "--configfile", str(a), wait=False)
    log = tmp_path / "results" / "logs" / "train" / "digits" / "pca"
    deadline = time.monotonic() + 120
    while not any(log.glob("seed*.log")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    # --ignore-incomplete: once A's job has written its outputs and is still running (evaluating its run), Snakemake
    # reports them as incomplete to any other invocation, which is right and not what this test is about.
    second = snakemake(tmp_path, "-n", "--ignore-incomplete", *targets, "--configfile", str(b), timeout=120)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    out, _ = first.communicate(timeout=240)
    assert first.returncode == 0, out[-3000:]
    for seed in (0, 1):
        config = yaml.safe_load((tmp_path / f"results/runs/digits/pca/seed{seed}/config.yaml").read_text())
        assert config["train"]["lr"] == 0.001, f"seed {seed} trained with another grid's settings"
    after = snakemake(tmp_path, "-n", *targets, "--configfile", str(b), timeout=120)
    assert "Params have changed" in after.stdout + after.stderr
    same = snakemake(tmp_path, "-n", *targets, "--configfile", str(a), timeout=120)
    assert "Nothing to be done" in same.stdout + same.stderr


# ================================================================== 3. one run, one identity
def test_identity_is_written_at_creation(runs):
    ident = json.loads((runs["vae"] / IDENTITY_FILE).read_text())
    assert (ident["dataset"], ident["model"], ident["seed"]) == ("digits", "vae", 0)
    assert len(ident["fingerprint"]) == 16 and ident["created_as"] == "digits/vae/seed0"


@pytest.mark.parametrize("model,seed", [("arm", 0), ("vae", 1)])
def test_train_into_another_runs_directory_is_refused(model, seed, capsys, isolated_cwd, runs, store):
    before = snapshot(runs["vae"])
    (runs["vae"] / "last.pt").rename(runs["vae"] / "last.keep")  # else the resume check refuses it first
    try:
        msg = fails(capsys, "train", "--dataset", "digits", "--model", model, "--seed", seed, "--out", runs["vae"],
                    *FAST, "--set", f"tracking_uri={store}")
    finally:
        (runs["vae"] / "last.keep").rename(runs["vae"] / "last.pt")
    assert "holds the run vae on digits, seed 0" in msg and "another --out" in msg
    assert snapshot(runs["vae"]) == before


def test_evaluate_refuses_another_familys_checkpoint(capsys, isolated_cwd, runs, tmp_path):
    run = tmp_path / "digits" / "vae" / "seed0"
    shutil.copytree(runs["vae"], run)
    (run / IDENTITY_FILE).write_text((runs["vae"] / IDENTITY_FILE).read_text().replace(
        '"created_as": "digits/vae/seed0"', f'"created_as": "{"/".join(run.parts[-3:])}"'))
    shutil.copy(runs["arm"] / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    msg = fails(capsys, "evaluate", "--run", run, "--only", "training")
    assert "checkpoint.pt is the run arm on digits" in msg and "created for vae on digits" in msg
    assert snapshot(run) == before


def test_evaluate_refuses_a_copied_run_directory(capsys, isolated_cwd, runs):
    """`seed0.bak/` holds seed0's MLflow id: evaluating it would log over the original's metrics."""
    copy = runs["vae"].with_name("seed0.bak")
    shutil.copytree(runs["vae"], copy)
    before = snapshot(runs["root"])
    try:
        msg = fails(capsys, "evaluate", "--run", copy, "--only", "training")
    finally:
        shutil.rmtree(copy)
    assert "is a copy of the run directory" in msg and "digits/vae/seed0" in msg
    assert snapshot(runs["root"]) == {k: v for k, v in before.items() if "seed0.bak" not in k}


def test_tables_refuse_a_backup_copy_as_an_extra_seed(capsys, isolated_cwd, runs, tmp_path):
    shutil.copytree(runs["vae"], tmp_path / "runs" / "digits" / "vae" / "seed0")
    shutil.copytree(runs["vae"], tmp_path / "runs" / "digits" / "vae" / "seed0.bak")
    msg = fails(capsys, "tables", "--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert "two metrics.json files for vae on digits, seed 0" in msg and "seed0.bak" in msg
    assert not (tmp_path / "out").exists()


def test_tables_refuse_metrics_in_another_runs_directory(capsys, isolated_cwd, runs, tmp_path):
    d = tmp_path / "runs" / "digits" / "vae" / "seed1"
    d.mkdir(parents=True)
    shutil.copy(runs["vae"] / "metrics.json", d / "metrics.json")
    msg = fails(capsys, "tables", "--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert "sits in the run directory of vae on digits, seed 1" in msg


def test_tables_refuse_metrics_that_disagree_with_the_identity(capsys, isolated_cwd, runs, tmp_path):
    d = tmp_path / "runs" / "elsewhere"
    shutil.copytree(runs["vae"], d)
    ident = json.loads((d / IDENTITY_FILE).read_text())
    (d / IDENTITY_FILE).write_text(json.dumps({**ident, "seed": 7}))
    msg = fails(capsys, "tables", "--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert "created for vae on digits, seed 7" in msg


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_second_writer_is_refused(command, capsys, isolated_cwd, runs, tmp_path, store):
    run = tmp_path / "digits" / "vae" / "seed0"
    shutil.copytree(runs["vae"], run)
    (run / IDENTITY_FILE).write_text((runs["vae"] / IDENTITY_FILE).read_text().replace(
        "digits/vae/seed0", "/".join(run.parts[-3:])))
    before = snapshot(run)
    with open(run / LOCK_FILE, "a") as held:  # what a running `dgmbench train` holds
        fcntl.flock(held, fcntl.LOCK_EX)
        if command == "train":
            msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", run, *FAST,
                        "--set", f"tracking_uri={store}")
        else:
            msg = fails(capsys, "evaluate", "--run", run, "--only", "training")
    assert "another dgmbench process is writing" in msg
    assert snapshot(run) == before
    assert not list(run.glob("*.tmp"))


# ============================================================ 4. no silently wrong result
@pytest.mark.parametrize("setting,expected", [
    ("train.grad_clip=-1", "grad_clip must be a finite number ≥ 0"),
    ("train.grad_clip=nan", "grad_clip"),
    ("train.lr=inf", "train.lr = inf is not a finite number"),
    ("train.lr=nan", "train.lr = nan is not a finite number"),
    ("train.lr=0", "lr must be > 0"),
    ("train.weight_decay=-0.1", "weight_decay must be"),
    ("train.weight_decay=.nan", "weight_decay"),
    ("train.batch_size=99999999999999", "out of range"),
    ("train.max_epochs=1e30", "max_epochs"),
    ("hparams.beta=nan", "hparams.vae.beta = nan is not a finite number"),
    ("eval.sampling.measure_seconds=inf", "evaluation settings are not part of a training run"),
    ("threads=100000", "threads must be an integer from 1 to 1024"),
])
def test_out_of_domain_settings_are_refused(setting, expected, capsys, isolated_cwd):
    msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", *FAST, "--set", setting)
    assert expected in msg
    assert not (isolated_cwd / "results").exists()


@pytest.mark.parametrize("seed", [2**32, 2**32 + 1, 2**64, 2**70])
def test_seeds_beyond_32_bits_are_refused(seed, capsys, isolated_cwd):
    msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", "--seed", seed, *FAST)
    assert "below 2^32" in msg


def test_grid_seeds_beyond_32_bits_are_refused(capsys, isolated_cwd):
    cfg = write_grid(isolated_cwd / "grid.yaml", seeds=[0, 2**32])
    assert "seeds" in fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae")


def test_nan_in_a_config_file_is_refused(capsys, isolated_cwd):
    cfg = isolated_cwd / "grid.yaml"
    cfg.write_text("datasets: [digits]\nmodels: [vae]\ntrain: {all: {lr: .nan}}\n")
    assert "train.lr = nan is not a finite number" in fails(capsys, "train", "--config", cfg, "--dataset", "digits",
                                                             "--model", "vae")


def test_a_seed_with_nan_metrics_counts_as_failed(capsys, isolated_cwd, runs, tmp_path):
    """Seed 1's NLL is NaN: the likelihood table says 1/2 seeds ok and its mean is seed 0's, not '2/2 ok'."""
    good = json.loads((runs["vae"] / "metrics.json").read_text())
    for seed in (0, 1):
        m = json.loads(json.dumps(good))
        m["run"]["seed"] = seed
        if seed == 1:
            m["likelihood"]["nll_nats"] = m["likelihood"]["nll_bpd"] = math.nan
        d = tmp_path / "runs" / "digits" / "vae" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
    assert main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    import pandas as pd

    row = pd.read_csv(tmp_path / "out" / "tables" / "likelihood.csv").iloc[0]
    assert row["seeds ok"] == "1/2"
    assert float(str(row["NLL (nats/image)"]).split()[0]) == pytest.approx(good["likelihood"]["nll_nats"], abs=0.006)


# ============================================================ 5. confinement
def test_a_symlink_out_of_results_is_refused(capsys, isolated_cwd, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (isolated_cwd / "results").mkdir()
    (isolated_cwd / "results" / "link").symlink_to(outside)
    cfg = write_grid(isolated_cwd / "grid.yaml", runs_dir="results/link/runs")
    msg = fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae", *FAST)
    assert "outside the results directory" in msg and "symbolic links" in msg
    assert not any(outside.iterdir())


@pytest.mark.parametrize("uri", ["sqlite:////tmp/elsewhere.db", "sqlite:///../mlflow.db", "file:///etc/mlflow",
                                 "sqlite:///results/../x.db"])
def test_tracking_store_in_a_config_is_confined(uri, capsys, isolated_cwd):
    cfg = write_grid(isolated_cwd / "grid.yaml", tracking_uri=uri)
    msg = fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae")
    assert "tracking_uri" in msg
    assert not Path("/tmp/elsewhere.db").exists()


@pytest.mark.parametrize("uri", ["sqlite:///mlflow/other.db", "sqlite:///results/mlflow.db", "http://127.0.0.1:5000",
                                 "https://mlflow.example.org/x", None])
def test_tracking_stores_inside_or_on_a_server_are_accepted(uri, isolated_cwd):
    from dgmbench.config import validate_grid

    assert validate_grid({"tracking_uri": uri})["tracking_uri"] == uri


def test_eval_dir_through_a_symlink_is_refused(capsys, isolated_cwd, tmp_path_factory):
    (isolated_cwd / "results").mkdir()
    (isolated_cwd / "results" / "cache").symlink_to(tmp_path_factory.mktemp("elsewhere"))
    cfg = write_grid(isolated_cwd / "grid.yaml", eval={"sample_quality": {"cache_dir": "results/cache/x"}})
    assert "outside the results directory" in fails(capsys, "train", "--config", cfg, "--dataset", "digits",
                                                    "--model", "vae")


class Planted:
    """What a hostile cifar-10 batch could hold: unpickling it would create a file."""

    def __reduce__(self):
        return (os.system, (f"touch {PLANTED_MARK}",))


PLANTED_MARK = "/tmp/dgmbench-hostile-pickle-ran"


def test_cifar_loader_refuses_pickles_that_are_not_plain_arrays(capsys, isolated_cwd, tmp_path):
    import numpy as np

    Path(PLANTED_MARK).unlink(missing_ok=True)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    plain = {"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(plain))
    (d / "data_batch_3").write_bytes(pickle.dumps({"data": Planted(), "labels": [0]}))
    msg = fails(capsys, "train", "--dataset", "cifar10", "--model", "vae", "--set", f"data_root={tmp_path}", *FAST)
    assert "data_batch_3" in msg and "not a plain array" in msg
    assert not Path(PLANTED_MARK).exists()


# ================================================================ 6. one line, never a traceback
def test_wrong_shaped_checkpoint(capsys, isolated_cwd, runs, tmp_path):
    """A checkpoint whose tensors do not fit the model its config names (`size mismatch` in torch)."""
    ckpt = torch.load(runs["vae"] / "checkpoint.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["hparams"]["latent_dim"] += 3
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "checkpoint.pt")
    before = snapshot(tmp_path)
    msg = fails(capsys, "evaluate", "--run", tmp_path / "run", "--only", "training")
    assert "does not fit the model" in msg and "retrain" in msg
    assert snapshot(tmp_path) == before


def test_checkpoint_write_failure_leaves_no_tmp(capsys, isolated_cwd, tmp_path, store, monkeypatch):
    """A full disk while torch writes a checkpoint (a RuntimeError from its zip writer, not an OSError)."""
    import dgmbench.checkpoint as ck

    def full(obj, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(ck.torch, "save", full)
    msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", tmp_path / "run", *FAST,
                "--set", f"tracking_uri={store}")
    assert "could not write" in msg and "free space" in msg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_corrupt_tracking_store(capsys, isolated_cwd, tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    before = db.read_bytes()
    msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", tmp_path / "run", *FAST,
                "--set", f"tracking_uri=sqlite:///{db}")
    assert "corrupt or not an MLflow database" in msg and "move it aside" in msg
    assert db.read_bytes() == before and not any((tmp_path / "run").iterdir())


def test_locked_tracking_store(capsys, isolated_cwd, tmp_path, monkeypatch):
    """Another process holds the sqlite store's write lock (a stuck writer): one line, not a hang."""
    import dgmbench.tracking as tracking

    monkeypatch.setattr(tracking, "LOCK_TIMEOUT", 0.3)
    store = f"sqlite:///{tmp_path / 'locked.db'}"
    with open(tmp_path / "locked.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", tmp_path / "run", *FAST,
                    "--set", f"tracking_uri={store}")
    assert "stayed locked by another process" in msg and "locked.db.lock" in msg
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("uri", ["htp//x", "http://", "sqlite://relative.db", "http://host:notaport",
                                 "mlflow db", "ftp://example.org/db"])
def test_malformed_tracking_uri(uri, capsys, isolated_cwd):
    msg = fails(capsys, "train", "--dataset", "digits", "--model", "vae", *FAST, "--set", f"tracking_uri={uri}")
    assert "tracking_uri" in msg and "http(s)://" in msg
    assert not (isolated_cwd / "results").exists()


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_ui_port_out_of_range(port, capsys, isolated_cwd, monkeypatch):
    import dgmbench.tracking as tracking

    monkeypatch.setattr(tracking, "serve_ui", lambda *a, **kw: pytest.fail("started the UI"))
    assert "not a TCP port" in fails(capsys, "ui", "--port", port)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("text,expected", [
    (BOMB, "expands to more than"),
    ("a: &a [*a]\n", "recursive"),
    ("datasets: [digits]\n#" + "x" * (1 << 20), "larger than"),
])
def test_yaml_bombs_are_refused_quickly(text, expected, capsys, isolated_cwd):
    cfg = isolated_cwd / "grid.yaml"
    cfg.write_text(text)
    t0 = time.monotonic()
    msg = fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae")
    assert expected in msg and time.monotonic() - t0 < 10


def test_config_that_is_not_utf8(capsys, isolated_cwd):
    cfg = isolated_cwd / "grid.yaml"
    cfg.write_bytes(b"datasets: [\xff\xfe]\n")
    assert "not UTF-8" in fails(capsys, "train", "--config", cfg, "--dataset", "digits", "--model", "vae")


@pytest.mark.parametrize("argv,expected", [
    (["--config-json", "{not json"], "not valid YAML"),
    (["--config-json", "[1, 2]"], "must hold a mapping"),
    (["--config-json", "{}", "--config", "x.yaml"], "not both"),
])
def test_bad_config_json(argv, expected, capsys, isolated_cwd):
    assert expected in fails(capsys, "train", "--dataset", "digits", "--model", "vae", *argv)


@pytest.mark.parametrize("content,expected", [
    ("[1, 2]", "no 'run' section"),
    ('{"run": {"dataset": "digits", "model": "vae", "status": "ok", "family": "vae"}}', "run.seed"),
    ('{"run": {"dataset": "digits", "model": "vae", "seed": "0", "status": "ok", "family": "vae"}}', "run.seed"),
    ('{"run": {"dataset": "digits", "model": "vae", "seed": 0, "status": "ok", "family": "vae"}, "likelihood": 3}',
     "section 'likelihood' is not a mapping"),
    (b"\xff\xfe\x00", "not valid JSON"),
    ('{"run": {"dataset": "digits", "model": "vae", "seed": 0, "status": "ok", "family": "vae"},'
     ' "likelihood": {"type": "exact"}}', "no 'run' or 'test_subset' section"),
    ('{"run": {"dataset": "digits", "model": "vae", "seed": 0, "status": "ok", "family": "vae"}, "test_subset": '
     '{"num_images": 1, "num_split": 1, "indices_sha1": "x", "seed": 0}, "likelihood": {"type": "exact"}}',
     "lacks field"),
])
def test_malformed_metrics_files_in_tables(content, expected, capsys, isolated_cwd, tmp_path):
    d = tmp_path / "runs" / "digits" / "vae" / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(tmp_path / "runs")
    msg = fails(capsys, "tables", "--runs", tmp_path / "runs", "--out", tmp_path / "out")
    assert expected in msg
    assert snapshot(tmp_path / "runs") == before


def test_out_of_domain_evaluation_setting_in_a_grid_is_refused(capsys, isolated_cwd):
    """Evaluation settings live in the grid's eval: section; an infinite one is refused there, in one line."""
    grid = isolated_cwd / "grid.yaml"
    grid.write_text("eval:\n  sampling: {measure_seconds: .inf}\n")
    msg = fails(capsys, "train", "--config", str(grid), "--dataset", "digits", "--model", "vae", *FAST)
    assert "eval.sampling.measure_seconds = inf is not a finite number" in msg
