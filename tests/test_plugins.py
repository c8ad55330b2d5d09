"""Plugins by entry point: the example package examples/dgmbench-made, installed the way CI installs it (pip into a
temporary target directory, no network, the environment untouched), shows up in `dgmbench list` with its source
package and passes check_model; a clashing plugin is refused naming both sources, and a plugin that fails to
import costs one line while the rest of dgmbench keeps working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import dgmbench_process

from dgmbench.registry import NameClashError, Registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dgmbench-made"


def pip_install_target(package: Path, target: Path) -> Path:
    """`pip install ./examples/<name>` into ``target`` (its dist-info carries the entry points); built from a copy
    so the source tree gets no build/ or egg-info."""
    src = target.parent / f"{package.name}-src"
    shutil.copytree(package, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@pytest.fixture(scope="session")
def made_site(tmp_path_factory) -> Path:
    return pip_install_target(EXAMPLE, tmp_path_factory.mktemp("plugins") / "site")


def dgmbench(args: list[str], *paths: Path, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m dgmbench ARGS`` in a fresh process with ``paths`` (plugin sites) on its import path."""
    return dgmbench_process(args, cwd=cwd, paths=paths, timeout=timeout)


def fake_dist(site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
    """A minimal installed distribution: METADATA, entry_points.txt and top-level modules."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()))
    for mod, code in modules.items():
        (site / f"{mod}.py").write_text(textwrap.dedent(code))
    return site


def test_example_plugin_is_listed_with_its_source_package(made_site):
    proc = dgmbench(["list"], made_site)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("made "))
    assert "[exact]" in line and line.endswith("(dgmbench-made)")
    assert "arm " in proc.stdout and "(dgmbench)" in proc.stdout and not proc.stderr.strip()


def test_example_plugin_passes_check_model(made_site):
    code = ("from dgmbench.data import load_dataset; from dgmbench.models import MODELS; "
            "from dgmbench.testing import check_model; import torch; torch.set_num_threads(1); d = load_dataset('digits'); "
            "print(check_model(MODELS.get('made'), d.info, data=d.train.x[:128]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(made_site)])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "autoregressive_is_causal" in proc.stdout and "normalises_trained" in proc.stdout


def test_broken_and_clashing_plugins_cost_one_line_each(tmp_path, made_site):
    site = fake_dist(tmp_path / "site", "badplugins",
                     {"dgmbench.models": {"broken": "bad_import", "arm": "clashing_arm"}},
                     {"bad_import": "import not_a_module_anywhere\n",
                      "clashing_arm": """
                          from dgmbench.models import MODELS
                          MODELS.register("arm")(object)
                      """})
    proc = dgmbench(["list"], site, made_site)
    assert proc.returncode == 0, proc.stderr
    assert "(dgmbench-made)" in proc.stdout  # the working plugin still loads
    assert any(ln.split()[:1] == ["arm"] and ln.endswith("(dgmbench)") for ln in proc.stdout.splitlines())
    warnings = [ln for ln in proc.stderr.splitlines() if "plugin" in ln]
    assert len(warnings) == 2, proc.stderr
    broken = next(w for w in warnings if "'broken'" in w)
    assert "badplugins" in broken and "ModuleNotFoundError" in broken and "not_a_module_anywhere" in broken
    clash = next(w for w in warnings if "'arm'" in w)
    assert "model 'arm' from badplugins clashes: 'arm' is already registered, from dgmbench" in clash


def test_registry_records_sources_and_refuses_clashes(tmp_path, monkeypatch):
    """The mechanism in one process, on a registry of its own (a test group, so the real ones are untouched)."""
    import types

    reg: Registry = Registry("widget")
    monkeypatch.setitem(sys.modules, "widget_registry", types.SimpleNamespace(REG=reg))
    site = fake_dist(tmp_path / "site", "widgets-extra", {"dgmbench_test.widgets": {"a": "widget_a", "b": "widget_b"}},
                     {"widget_a": "import widget_registry\nwidget_registry.REG.register('spanner')(1)\n",
                      "widget_b": "import widget_registry\nwidget_registry.REG.register('hammer')(2)\n"})
    monkeypatch.syspath_prepend(str(site))
    reg.register("hammer")(0)  # in-tree
    reg.use_entry_points("dgmbench_test.widgets")
    assert reg.names() == ["hammer", "spanner"]  # the first lookup loaded the plugins
    assert reg.source("spanner") == "widgets-extra" and reg.source("hammer") == "dgmbench"
    assert reg.get("hammer") == 0  # the clash did not replace the in-tree entry
    assert reg.plugin_errors == ["widget plugin 'b' (widgets-extra: widget_b) failed to load and is skipped: "
                                 "NameClashError: widget 'hammer' from widgets-extra clashes: 'hammer' is already "
                                 "registered, from dgmbench; one of them must be renamed"]
    with pytest.raises(NameClashError, match="from dgmbench"):
        reg.register("spanner")(3)


@pytest.mark.slow
def test_tiny_grid_puts_the_plugin_in_every_table_its_declarations_apply_to(made_site, tmp_path, monkeypatch):
    """The default pipeline with the plugin added beside two in-tree families (`models=[arm, vae, made]`): MADE
    declares an exact likelihood and autoregressive conditionals, so it gets likelihood, matrix and speed rows and
    a real ANS bitstream that decodes bit for bit."""
    import pandas as pd
    import yaml

    from conftest import TINY_EVAL, TINY_TRAIN
    from conftest import snakemake

    grid = {"datasets": ["digits"], "models": ["arm", "vae", "made"], "seeds": [0], "device": "cpu", "threads": 1,
            "tracking_uri": None, "experiment": "plugins", "train": {"all": TINY_TRAIN},
            "hparams": {"arm": {"hidden_channels": 8, "head_channels": 8, "num_layers": 2}, "made": {"hidden_units": 64}},
            "eval": {**TINY_EVAL, "ood": {"num_entropy": 16}}}
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    workdir = tmp_path / "work"
    workdir.mkdir()
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(made_site)] + ([old] if old else [])))  # jobs see the plugin
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    tables = workdir / "results" / "tables"
    lik = pd.read_csv(tables / "likelihood.csv")
    assert set(lik[lik["family"] != "baseline (no model)"]["model"]) == {"arm", "vae", "made"}
    assert lik.set_index("model").loc["made", "likelihood"] == "exact"
    matrix = pd.read_csv(tables / "matrix.csv").set_index("model")
    assert matrix.loc["made", "family"] == "autoregressive (MADE)"
    assert matrix.loc["made", "likelihood"].startswith("exact") and matrix.loc["made", "lossless compression"].startswith("yes")
    speed = pd.read_csv(tables / "speed.csv").set_index("model")
    assert int(speed.loc["made", "passes/sample"]) == 64 and speed.loc["made", "same samples as naive"] == "yes"
    comp = pd.read_csv(tables / "compression.csv").set_index("coder")
    assert comp.loc["made + ANS", "round trip"] == "exact"
    metrics = json.loads((workdir / "results/runs/digits/made/seed0/metrics.json").read_text())
    assert metrics["compression"]["round_trip_exact"] and metrics["compression"]["coded_bits"] > 0


def test_dataset_plugin_is_listed_and_loads(tmp_path):
    site = fake_dist(tmp_path / "site", "noise-data", {"dgmbench.datasets": {"noise": "noise_data"}}, {"noise_data": """
        import torch
        from dgmbench.data import Split, register_dataset

        @register_dataset("noise", shape=(1, 2, 2), num_levels=4, num_classes=1, description="uniform noise")
        def load(data_root):
            g = torch.Generator().manual_seed(0)
            return tuple(Split(torch.randint(4, (n, 1, 2, 2), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))
                         for n in (20, 5, 5))
    """})
    proc = dgmbench(["list"], site)
    assert proc.returncode == 0, proc.stderr
    assert any(ln.split()[:1] == ["noise"] and ln.endswith("(noise-data)") for ln in proc.stdout.splitlines()), proc.stdout
    code = "from dgmbench.data import load_dataset; print(len(load_dataset('noise').train))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "20", out.stderr
