"""Same config and seed → the same metrics.json on CPU, for every registered family (new families are covered
for free). One copy of each run is made in a separate Python process (its own hash seed, import order and
RNG history), the other in this one; everything but wall-clock timing must agree exactly."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgmbench.evaluate import without_timing
from dgmbench.models import MODELS

# Tiny budgets: the point is identical numbers, not good ones.
TRAIN_SETS = ["train.max_epochs=2", "train.num_train=128", "train.num_val=64", "train.batch_size=32",
              "train.patience=0", "train.checkpoint_every=1", "device=cpu"]
# Small settings for the evaluators that exist when this runs (a setting an evaluator lacks is skipped).
SMALL_EVAL = {
    "likelihood": {"iwae_k": 8, "iwae_repeats": 2},
    "normalisation": {"bound_repeats": 2, "iwae_k": 8},
    "compression": {"verify_images": 4},
    "test_subset": {"max_images": 32},
    "lossy": {"jpeg_qualities": [50]},
    "probe": {"c_grid": [1.0], "cv_folds": 2, "num_train": 200, "max_iter": 100},
    "ood": {"num_entropy": 32, "other_datasets": False, "transforms": ["noise"]},
    "sample_quality": {"num_samples": 64, "classifier_steps": 30},
    "sampling": {"batch_sizes": [1, 16], "repeats": 1, "measure_seconds": 0.01, "probe_sizes": [8],
                 "probe_batch_sizes": [1], "probe_seconds": 0.01},
}


# Smaller networks where a family has these settings (by name, so new families get them too).
SMALL_HPARAMS = {"hidden_channels": 16, "head_channels": 32, "channels": 8, "hidden_dim": 64, "num_steps": 4,
                 "g_channels": 16, "d_channels": 16, "dequant_hidden": 8}


def small_sets(model: str) -> list[str]:
    sets = list(TRAIN_SETS)
    hfields = {f.name for f in dataclasses.fields(MODELS.get(model).Config)}
    sets += [f"hparams.{k}={v}" for k, v in SMALL_HPARAMS.items() if k in hfields]
    return sets


def small_eval() -> dict:
    """The evaluation settings of SMALL_EVAL (evaluation settings are the grid's, not the run's)."""
    from dgmbench.config import eval_settings

    return eval_settings({"eval": SMALL_EVAL})


def run_family(model: str, out: Path) -> dict:
    """Train and evaluate one tiny run of ``model`` into ``out``; returns its metrics.json."""
    from dgmbench.config import load_grid, resolve_run
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    run = resolve_run(load_grid(None), dataset="digits", model=model, seed=0, sets=small_sets(model))
    run.tracking_uri = f"sqlite:///{out.parent.parent / 'mlflow.db'}"  # one store per process
    train(run, out, progress=False)
    evaluate(out, eval_config=small_eval())
    return json.loads((out / "metrics.json").read_text())


def comparable(metrics: dict) -> dict:
    out = without_timing(metrics)
    out["run"].pop("git_commit", None)  # provenance, not a result (colleagues commit while tests run)
    return out


_CHILD = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_determinism import run_family
root = Path(sys.argv[1])
for model in sys.argv[2:]:
    try:
        run_family(model, root / model / "run")
    except Exception as err:
        (root / model).mkdir(parents=True, exist_ok=True)
        (root / model / "error.txt").write_text(repr(err))
    (root / model / "done").write_text("")
"""


@pytest.fixture(scope="module")
def other_process(tmp_path_factory):
    """A second Python process making every family's run; the tests wait for each family's ``done`` file."""
    root = tmp_path_factory.mktemp("det-child")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(Path(__file__).parent)), str(root),
                             *MODELS.names()], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    yield proc, root
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("model", MODELS.names())
def test_same_seed_same_metrics(model, other_process, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # evaluators' caches (results/cache) stay in the test's directory
    mine = comparable(run_family(model, tmp_path / model / "run"))
    proc, root = other_process
    deadline = time.monotonic() + 300
    while not (root / model / "done").exists():
        if proc.poll() is not None and not (root / model / "done").exists():
            pytest.fail(f"the other process ended early: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the other process is too slow"
        time.sleep(0.1)
    assert not (root / model / "error.txt").exists(), (root / model / "error.txt").read_text()
    theirs = comparable(json.loads((root / model / "run" / "metrics.json").read_text()))
    diffs = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    assert not diffs, f"{model}: sections differ between two runs of one seed: {diffs}\n" + "\n".join(
        f"{k}: {mine.get(k)}\n  vs {theirs.get(k)}" for k in diffs)


def test_without_timing_drops_exactly_the_timing_fields():
    m = {"timing": {"x": 1.0}, "sampling": {"samples_per_s": 3.0, "batch": [{"call_seconds": 1, "n": 2}],
                                             "passes": 64}, "run": {"seed": 0}}
    assert without_timing(m) == {"sampling": {"batch": [{"n": 2}], "passes": 64}, "run": {"seed": 0}}
