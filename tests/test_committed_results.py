"""Committed tables follow from committed metrics.

`dgmbench tables` copies what it reads (each run's metrics.json, the sample grids a figure shows) into
OUT/metrics; rebuilding from that copy gives the same tables byte for byte and the same plotted data in every
figure. The last test applies the check to every results directory committed in this repository, so CI fails
when a committed table or figure no longer follows from the committed metrics (or has none beside it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dgmbench.cli import main
from dgmbench.tables import build_all, load_runs
from dgmbench.tables.committed import check, regenerate_command, results_dirs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tiny_runs, tmp_path_factory):
    """OUT built from the tiny runs; each test works on its own copy of it."""
    out = tmp_path_factory.mktemp("built") / "results"
    build_all(tiny_runs, out)
    return out


@pytest.fixture
def out(built, tmp_path):
    dst = tmp_path / "results"
    shutil.copytree(built, dst)
    return dst


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_the_copy_is_exactly_the_input(tiny_runs, built):
    """OUT/metrics holds every run's metrics.json, byte for byte, and the grid of each model's lowest seed (the
    one the figures show), in the <dataset>/<model>/seed<k> layout, and nothing else."""
    copies = _files(built / "metrics")
    runs = {p.relative_to(tiny_runs).as_posix(): p.read_bytes() for p in tiny_runs.glob("*/*/*/metrics.json")}
    grids = {f"digits/{m}/seed0/samples.png": (tiny_runs / "digits" / m / "seed0" / "samples.png").read_bytes()
             for m in ("vae", "hvae", "gan")}  # pca cannot sample; vae's seed1 grid is not shown
    assert copies == {**runs, **grids}


def test_the_copies_read_back_as_the_same_runs(tiny_runs, built):
    """The copies pass load_runs' identity checks and parse to the same typed records."""
    original = {(r.info.dataset, r.info.model, r.info.seed): r for r in load_runs(tiny_runs)}
    copied = {(r.info.dataset, r.info.model, r.info.seed): r for r in load_runs(built / "metrics")}
    assert copied.keys() == original.keys()
    for key, r in copied.items():
        assert r.info == original[key].info and r.results == original[key].results


def test_rebuilding_from_the_copies_gives_the_same_tables_and_figure_data(built, tmp_path):
    rebuilt = tmp_path / "rebuilt"
    assert main(["tables", "--runs", str(built / "metrics"), "--out", str(rebuilt)]) == 0
    assert _files(rebuilt / "tables") == _files(built / "tables")
    manifests = {n: b for n, b in _files(built / "figures").items() if n.endswith(".json")}
    assert manifests and {n: b for n, b in _files(rebuilt / "figures").items() if n.endswith(".json")} == manifests
    assert {n for n in _files(built / "figures") if n.endswith(".png")} == \
        {n.replace(".json", ".png") for n in manifests}  # every figure has its data manifest
    assert _files(rebuilt / "metrics") == _files(built / "metrics")
    assert check(built) is None


def test_rebuilding_in_place_from_the_copies_changes_nothing(out):
    before = _files(out)
    assert main(["tables", "--runs", str(out / "metrics"), "--out", str(out)]) == 0
    assert _files(out) == before


def test_stale_copies_are_removed(tiny_runs, out, tmp_path):
    """A run that is no longer an input loses its copy (and an emptied directory goes)."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    shutil.rmtree(runs / "digits" / "vae" / "seed0")  # vae's shown grid is now seed1's
    build_all(runs, out)
    copies = _files(out / "metrics")
    assert not any(n.startswith("digits/vae/seed0/") for n in copies) and not (out / "metrics/digits/vae/seed0").exists()
    assert "digits/vae/seed1/samples.png" in copies
    assert check(out) is None


def test_copies_inside_the_runs_directory_are_not_read_as_runs(tiny_runs, tmp_path):
    """`--runs DIR --out DIR/out`: the second build does not find each run twice (its copy in DIR/out/metrics)."""
    shutil.copytree(tiny_runs, tmp_path / "runs")
    for _ in range(2):
        assert main(["tables", "--runs", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert check(tmp_path / "out") is None


def test_check_names_a_changed_table_and_the_command(out, capsys):
    path = out / "tables" / "likelihood.md"
    path.write_text(path.read_text().replace("vae", "VAE", 1))
    problem = check(out)
    assert problem.startswith(f"{path} differs") and problem.endswith(regenerate_command(out))
    assert main(["tables", "--check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err


def test_check_finds_a_metric_the_tables_do_not_follow(out):
    """Change a number in a committed metrics.json: the tables built from it no longer match."""
    path = out / "metrics" / "digits" / "hvae" / "seed0" / "metrics.json"
    m = json.loads(path.read_text())
    m["likelihood"]["nll_nats"] += 1.0
    path.write_text(json.dumps(m))
    assert "differs from its rebuild" in check(out)


def test_check_finds_changed_figure_data(out):
    path = out / "figures" / "training_curves_digits.json"
    manifest = json.loads(path.read_text())
    manifest["data"]["panels"][0]["mean"][0] += 1.0
    manifest["data_sha1"] = "0" * 40
    path.write_text(json.dumps(manifest))
    problem = check(out)
    assert problem.startswith(f"{path}: plotted data differ") and "'panels'" in problem


def test_check_finds_stale_and_missing_files(out):
    (out / "tables" / "old.md").write_text("a table no builder writes\n")
    assert "old.md is not produced" in check(out)
    (out / "tables" / "old.md").unlink()
    (out / "figures" / "samples_digits_gan.png").unlink()
    assert "samples_digits_gan.png is missing" in check(out)


def test_check_fails_on_tables_without_metrics(out, tmp_path, capsys):
    shutil.rmtree(out / "metrics")
    assert "has no committed metrics beside it" in check(out)
    assert main(["tables", "--check", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_results_metrics_are_not_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "results/metrics/digits/vae/seed0/metrics.json",
                              "results/full/metrics/mnist5k/vae/seed0/samples.png", "results/runs/x/y/seed0/metrics.json"],
                             cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == ["results/runs/x/y/seed0/metrics.json"]


@pytest.mark.parametrize("results", [d.relative_to(REPO) for d in results_dirs(REPO)], ids=str)
def test_committed_tables_follow_from_committed_metrics(results, monkeypatch):
    """Every committed results directory: its tables and figures are what its committed metrics give."""
    monkeypatch.chdir(REPO)  # the message names repository paths and a command to run from the root
    problem = check(results)
    if problem:
        pytest.fail(problem, pytrace=False)
