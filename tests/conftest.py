"""Shared fixtures. Tests run on the CPU with one thread each (CI has 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(1)


# The modules that keep one worker busiest (summed test seconds on a quiet 2-core AMD EPYC, 2026-12-06: parallel 120,
# pipeline 103, slurm 89, resume 74, plugins 68, hostile 45; everything else ≤ 35) run first. `make test` hands
# modules to its two workers in collection order (`--dist loadscope --no-loadscope-reorder`), so the longest start
# first and the short ones fill in the end. xdist's own order (most tests first) put these few-test, minute-long
# modules last: one worker ran 435 s of tests while the other ran 298.
SLOW_FIRST = ("test_parallel.py", "test_pipeline.py", "test_slurm.py", "test_resume.py", "test_plugins.py",
              "test_hostile.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def digits():
    from dgmbench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def isolated_cwd(tmp_path, monkeypatch):
    """Run in a fresh directory, so the default MLflow store (./mlflow/mlflow.db) is the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def small_info(shape=(1, 4, 4), num_levels=3, name="tiny"):
    from dgmbench.data import DatasetInfo

    return DatasetInfo(name, shape, num_levels, 2, "test images")


@pytest.fixture
def float64():
    """float64 as the default dtype for one test (exactness checks: invertibility, log-dets, Σp = 1)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# The smallest training and evaluation that still run every evaluator (each writes its metrics.json section).
# The scale-out tests (test_parallel.py, test_slurm.py) run grids of these.
TINY_TRAIN = {"max_epochs": 2, "num_train": 48, "num_val": 32, "batch_size": 16, "patience": 0}
TINY_EVAL = {
    "likelihood": {"iwae_k": 2, "iwae_repeats": 1},
    "normalisation": {"spaces": [[1, 2, 2, 3]], "bound_repeats": 1, "iwae_k": 2},
    "sampling": {"batch_sizes": [1, 4], "repeats": 1, "measure_seconds": 0.01, "max_call_seconds": 0.5,
                 "probe_sizes": [8], "probe_batch_sizes": [1], "probe_seconds": 0.01, "identity_check_samples": 2},
    "compression": {"verify_images": 2},
    "test_subset": {"max_images": 32},
    "lossy": {"jpeg_qualities": [50]},
    "sample_quality": {"num_samples": 32, "classifier_steps": 10, "classifier_width": 4, "feature_dim": 8},
    "probe": {"c_grid": [1.0], "labels_per_class": 2, "cv_folds": 2, "num_train": 64, "max_iter": 20},
    "ood": {"num_entropy": 32},
}


def make_ctx(model, dataset, *, max_images: int = 0, run=None, results=None, run_dir=None):
    """An EvalContext for calling one evaluator directly: the model on the CPU, the fixed test subset of
    ``max_images`` (0 = the whole test split), the run config ``run`` (default: the model's family defaults on the
    dataset, seed 0)."""
    from dgmbench.config import GRID_DEFAULTS, resolve_run
    from dgmbench.metrics import EvalContext, TestSubset, TestSubsetConfig

    if run is None and getattr(model, "name", "") and dataset.info.name:
        from dgmbench.models import MODELS

        if model.name in MODELS:
            run = resolve_run({**GRID_DEFAULTS}, dataset=dataset.info.name, model=model.name, seed=0)
    subset, idx = TestSubset.choose(len(dataset.test.x), TestSubsetConfig(max_images=max_images))
    return EvalContext(model=model, dataset=dataset, run=run, device=torch.device("cpu"), run_dir=run_dir,
                       record={}, subset=subset, test_x=dataset.test.x[idx], results=dict(results or {}))


def make_run(dataset: str, model: str, seed: int = 0, *, status: str = "ok", family: str = "test", **results):
    """A typed run record (what the table builders read) holding ``results`` (evaluator name → its Result); the
    other run fields are placeholders."""
    from dgmbench.metrics import TestSubset
    from dgmbench.results import RunInfo, RunRecord

    info = RunInfo(dataset=dataset, model=model, base_model=model, variant=None, seed=seed, family=family,
                   likelihood="exact", status=status, diverged_epoch=None, diverged_reason=None, epochs_run=1,
                   best_epoch=1, max_epochs=1, num_params=0, git_commit="test", evaluation_index=0,
                   evaluated={name: True for name in results}, eval_settings={})
    return RunRecord(info=info, subset=TestSubset(10, 10, "0" * 16, 0), results=dict(results))


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A runs directory trained and evaluated in this process with TINY_TRAIN and TINY_EVAL, for the tables and
    figures tests: vae (2 seeds), hvae, gan and pca (its closed form: one epoch). About 10 s on 2 idle cores."""
    from dgmbench.config import eval_settings, resolve_run, validate_grid
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    root = tmp_path_factory.mktemp("tiny_runs")
    runs = root / "runs"
    grid = validate_grid({"datasets": ["digits"], "models": ["vae"], "device": "cpu", "tracking_uri": None,
                          "experiment": "tiny", "train": {"all": TINY_TRAIN}, "eval": TINY_EVAL})
    settings = eval_settings(grid)
    cwd = os.getcwd()
    os.chdir(root)  # the default MLflow store (./mlflow) is this fixture's own
    try:
        for model, seed in [("vae", 0), ("vae", 1), ("hvae", 0), ("gan", 0), ("pca", 0)]:
            sets = ["train.max_epochs=1"] if model == "pca" else []
            run = resolve_run(grid, dataset="digits", model=model, seed=seed, sets=sets)
            out = runs / "digits" / model / f"seed{seed}"
            train(run, out)
            evaluate(out, eval_config=settings)
    finally:
        os.chdir(cwd)
    return runs


REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"


def dgmbench_process(args, *, cwd: Path | None = None, paths=(), timeout: int = 300,
                     **env: str) -> subprocess.CompletedProcess:
    """``python -m dgmbench ARGS`` in a process of its own (as a workflow job runs it), in ``cwd``, with the
    repository and ``paths`` (plugin sites) on its import path and no tracking URI from the caller's environment;
    ``env`` adds variables. The caller checks the return code."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *map(str, paths)]),
               "MLFLOW_DISABLE_TELEMETRY": "true", **env}
    environ.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dgmbench", *args], capture_output=True, text=True, env=environ,
                          cwd=cwd, timeout=timeout)


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` on the repository's Snakefile in ``workdir`` (its own MLflow store, results and runs)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


@pytest.fixture(scope="session")
def smoke_run(request, tmp_path_factory) -> Path:
    """The smoke grid (config/smoke.yaml: every family, one seed) through Snakemake in a directory of its own, once
    per session: the pipeline tests and the report tests read the same run. Under pytest-xdist (`make test` runs
    two workers) the first worker to ask builds it in the session's shared temporary directory, under a file lock,
    and the other waits for it and reads the same run."""
    if not hasattr(request.config, "workerinput"):  # one process: no other worker to share with
        return _smoke(tmp_path_factory.mktemp("smoke"))
    from filelock import FileLock  # a dependency of torch

    shared = tmp_path_factory.getbasetemp().parent  # the workers' common parent
    workdir = shared / "smoke"
    with FileLock(str(shared / "smoke.lock")):
        if not (workdir / ".built").exists():
            workdir.mkdir(exist_ok=True)
            _smoke(workdir)
            (workdir / ".built").write_text("")
    return workdir


def _smoke(workdir: Path) -> Path:
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(SMOKE))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir
