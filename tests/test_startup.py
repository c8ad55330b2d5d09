"""Cheap start-up (issue #19): `dgmbench --help` and `dgmbench list` import no torch, no model and no metric, because
the in-tree families are declared by name, module and the metadata `list` shows; these declarations must equal what
the classes themselves declare, and a declared entry loads on its first lookup."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from dgmbench.registry import NameClashError, Registry

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "sklearn", "pandas", "matplotlib", "mlflow")

PROBE = """
import contextlib, io, sys
from dgmbench.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = main({argv!r})
    except SystemExit as stop:  # --help exits
        code = stop.code
assert code == 0, code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
ours = sorted(m for m in sys.modules if m.startswith(("dgmbench.models.", "dgmbench.metrics")))
print(len(out.getvalue().splitlines()), heavy, ours)
"""


@pytest.mark.parametrize("argv", [["--help"], ["list"]])
def test_help_and_list_import_no_torch_model_or_metric(argv):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(maxsplit=1)[1].strip() == "[] []", proc.stdout  # nothing heavy, no model or metric
    assert int(proc.stdout.split()[0]) > 10  # and it printed the help or the list


def test_every_builtin_model_is_declared_as_its_class_declares_it():
    """Each declaration (what `dgmbench list` shows without importing) equals the loaded class's own attributes,
    and every family module in dgmbench/models registers only declared names."""
    from dgmbench.models import MODELS, _describe
    import dgmbench.models as package

    declared = {n for n in MODELS.names() if MODELS.declared(n) is not None}
    for info in pkgutil.iter_modules(package.__path__):  # a new family file without a declaration fails here
        importlib.import_module(f"dgmbench.models.{info.name}")
    builtin = {n for n in MODELS.names() if MODELS.source(n) == "dgmbench"}
    assert builtin == declared and len(declared) >= 11
    for name in sorted(declared):
        cls = MODELS.get(name)
        assert cls.name == name and MODELS.declared(name) == _describe(cls) == MODELS.meta(name), name
        assert cls.__module__ == MODELS._declared[name].module


def test_builtin_datasets_load_as_their_metadata_says():
    """The dataset registry's metadata (shape, levels, classes) describes the data its loaders return."""
    from dgmbench.data import DATASETS, load_dataset

    for name in ("digits", "toy2d-ring", "toy2d-checker"):
        info = DATASETS.get(name).info
        ds = load_dataset(name)
        x = ds.train.x
        assert tuple(x.shape[1:]) == info.shape and int(x.max()) == info.num_levels - 1, name
        assert int(ds.train.y.max()) == info.num_classes - 1, name


def test_declared_entries_load_on_first_lookup(tmp_path, monkeypatch):
    """The mechanism on a registry of its own: listed and described without importing; imported by get();
    a clash with a declared name is refused even before it loads; a module that does not register is named."""
    import types

    reg: Registry = Registry("widget", describe=lambda obj: {"size": obj.size})
    monkeypatch.setitem(sys.modules, "widget_registry_lazy", types.SimpleNamespace(REG=reg))
    (tmp_path / "widget_spanner.py").write_text(
        "import widget_registry_lazy\n"
        "@widget_registry_lazy.REG.register('spanner')\n"
        "class Spanner:\n    size = 3\n")
    (tmp_path / "widget_silent.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg.declare("spanner", "widget_spanner", size=3)
    reg.declare("silent", "widget_silent", size=0)

    assert reg.names() == ["silent", "spanner"] and reg.meta("spanner") == {"size": 3}
    assert reg.source("spanner") == "dgmbench" and "widget_spanner" not in sys.modules
    with pytest.raises(NameClashError, match="'spanner' is already registered, from dgmbench"):
        reg.register("spanner")(types.SimpleNamespace(size=9))  # another module claiming the declared name
    assert reg.get("spanner").__name__ == "Spanner" and "widget_spanner" in sys.modules
    assert reg.meta("spanner") == reg.declared("spanner") == {"size": 3}
    with pytest.raises(RuntimeError, match="widget_silent is declared to register widget 'silent' but did not"):
        reg.get("silent")
    monkeypatch.delitem(sys.modules, "widget_spanner")
    monkeypatch.delitem(sys.modules, "widget_silent")


def test_digits_read_without_sklearn_equal_load_digits():
    """digits is read from scikit-learn's bundled file without importing scikit-learn (its import brings scipy.stats
    and pandas); the arrays are exactly what sklearn.datasets.load_digits returns, the trusted reader."""
    from dgmbench.data import _read_sklearn_digits

    images, target = _read_sklearn_digits()
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and (images == bunch.images).all()
    assert target.dtype == bunch.target.dtype and (target == bunch.target).all()


JOB = """
import sys
from dgmbench.cli import main
code = main({argv!r})
assert code == 0, code
print(sorted({{m for m in sys.modules if m in ("torch._dynamo", "mlflow", "sklearn", "scipy.stats")}}))
"""


def test_a_workflow_job_imports_no_dynamo_and_no_mlflow(tmp_path):
    """What the workflow's train job costs beyond torch (issue #19): with its tracking journalled and its seed's
    FLOP count already cached by another seed, a train + evaluate job imports neither torch._dynamo (optimizer,
    FLOP counter) nor MLflow; only the evaluators that need them import scipy.stats or scikit-learn. The first seed
    counts the FLOPs (and so imports dynamo): asserted too, so the test cannot pass by counting nothing."""
    import json

    grid = {"datasets": ["digits"], "models": ["vae"], "device": "cpu",
            "train": {"all": {"max_epochs": 1, "num_train": 64, "num_val": 64, "batch_size": 64, "patience": 0}},
            "eval": {"likelihood": {"iwae_k": 2, "iwae_repeats": 1}, "test_subset": {"max_images": 64}}}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    seen = []
    for seed in (0, 1):
        argv = ["train", "--dataset", "digits", "--model", "vae", "--seed", str(seed), "--config", "grid.json",
                "--evaluate", "--tracking", "journal"]  # into the grid's runs_dir, results/runs: its FLOP cache
        proc = subprocess.run([sys.executable, "-c", JOB.format(argv=argv)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen.append(proc.stdout.strip().splitlines()[-1])
    assert "'torch._dynamo'" in seen[0] and "'mlflow'" not in seen[0]  # the first seed counted the FLOPs
    assert "'torch._dynamo'" not in seen[1] and "'mlflow'" not in seen[1], seen[1]
    runs = tmp_path / "results" / "runs"
    assert not (tmp_path / "mlflow").exists() and len(list((runs / ".flops").glob("*.json"))) == 1
    record = [json.loads((runs / f"digits/vae/seed{s}/metrics.json").read_text())["training"] for s in (0, 1)]
    assert record[0]["flops_per_step"] == record[1]["flops_per_step"] > 0
