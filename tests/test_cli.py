"""What the command line tells a person: `--version`, a help text on every argument, no heavy import for either,
the one summary line that ends training, and one flushed line per evaluator as it finishes."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import dgmbench
from dgmbench.cli import main, make_parser

from conftest import TINY_EVAL, TINY_TRAIN

HEAVY = ("torch", "numpy", "mlflow", "pandas", "scipy", "sklearn", "snakemake", "matplotlib")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = make_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"dgmbench": parser, **{f"dgmbench {name}": p for name, p in sub.choices.items()}}


def test_every_argument_has_a_help_text():
    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, p in subcommands().items()
               for a in p._actions if not a.help]
    assert missing == []
    train = subcommands()["dgmbench train"]
    for option in ("--dataset", "--model"):  # the help says where the valid names are listed
        (action,) = [a for a in train._actions if option in a.option_strings]
        assert "dgmbench list" in action.help


def test_version_and_help_import_nothing_heavy():
    """`--version` reads torch's version from its metadata; `--help` of every subcommand imports no registry."""
    argvs = [["--version"], ["--help"]] + [[cmd.split()[1], "--help"] for cmd in subcommands() if " " in cmd]
    code = ("import sys, contextlib, io\nfrom dgmbench.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try: main(argv)\n"
            "        except SystemExit as e: assert e.code == 0, (argv, e.code)\n"
            "    if argv == ['--version']: print(out.getvalue().strip())\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    version, heavy = out.strip().splitlines()
    assert version.startswith(f"dgmbench {dgmbench.__version__} (torch {metadata.version('torch')}")
    assert heavy == "[]"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A VAE on digits trained and evaluated with the tiny settings; what the two commands printed."""
    root = tmp_path_factory.mktemp("cli")  # the working directory: its ./mlflow/mlflow.db is this module's own
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({"train": {"all": TINY_TRAIN}, "eval": TINY_EVAL}))
    run = root / "results" / "runs" / "vae"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(sys, "stdout", out)
        assert main(["train", "--config", str(grid), "--dataset", "digits", "--model", "vae", "--out", str(run)]) == 0
    return {"root": root, "grid": grid, "run": run, "train_out": out.getvalue()}


def test_training_ends_with_one_summary_line(tiny_run):
    """The last line: epochs run of the maximum, the best validation NLL in nats and bits/dim at its epoch (the
    curve's minimum; bits/dim = nats / (64 ln 2) on 8×8 digits) and the time; nothing else after the bar."""
    lines = tiny_run["train_out"].strip().splitlines()
    assert len(lines) == 1, lines
    m = re.fullmatch(r"vae-digits-seed0: ok after (\d+)/(\d+) epochs, best validation NLL ([\d.]+) nats = "
                     r"([\d.]+) bits/dim \(epoch (\d+)\), ([\d.]+) s training; checkpoint in (.+)", lines[0])
    assert m, lines[0]
    with open(tiny_run["run"] / "curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert (int(m[1]), int(m[2])) == (len(curve), TINY_TRAIN["max_epochs"])
    best = min(curve, key=lambda row: float(row["val_nats"]))
    assert float(m[3]) == pytest.approx(float(best["val_nats"]), abs=0.005)
    assert float(m[4]) == pytest.approx(float(best["val_nats"]) / (64 * math.log(2)), abs=0.0005)
    assert int(m[5]) == int(best["epoch"])
    assert float(m[6]) == pytest.approx(float(curve[-1]["seconds"]), abs=0.05)
    assert m[7] == str(tiny_run["run"])


def test_summary_line_without_a_likelihood_and_after_divergence():
    """Families with no validation score (the GAN) report their last training loss; a diverged run says why."""
    from dgmbench.config import GRID_DEFAULTS, resolve_run
    from dgmbench.train import summary_line

    run = resolve_run({**GRID_DEFAULTS}, dataset="digits", model="gan", seed=3)
    record = {"status": "ok", "epochs_run": 2, "best_epoch": 2, "stopped_early": False, "best_val_nats": None,
              "diverged_reason": None, "train_seconds": 1.25,
              "curve": [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": 1.25}]}
    assert summary_line(run, record) == (f"gan-digits-seed3: ok after 2/{run.train.max_epochs} epochs, "
                                         "no validation score (final training loss 1.25), 1.2 s training")
    record.update(status="diverged", diverged_reason="non-finite training loss", best_epoch=0)
    assert "(diverged: non-finite training loss)" in summary_line(run, record)


class Recorder(io.StringIO):
    """A stdout that remembers what had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed: list[str] = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_evaluate_prints_one_flushed_line_per_evaluator_with_its_time(tiny_run, monkeypatch):
    """One line per evaluator, in plan order, each flushed as it finishes; its seconds are metrics.json's timing
    for that evaluator, and they sum to less than the command's wall time."""
    from dgmbench.metrics import plan

    out = Recorder()
    monkeypatch.chdir(tiny_run["root"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(sys, "stdout", out)
    t0 = time.perf_counter()
    assert main(["evaluate", "--config", str(tiny_run["grid"]), "--run", str(tiny_run["run"])]) == 0
    wall = time.perf_counter() - t0
    monkeypatch.undo()
    metrics = json.loads((tiny_run["run"] / "metrics.json").read_text())
    names = [ev.name for ev in plan(None)]
    lines = out.getvalue().splitlines()
    progress = lines[:-1]  # the last line is the headline and where metrics.json went
    assert len(progress) == len(names)
    total = 0.0
    for i, (name, line) in enumerate(zip(names, progress), 1):
        m = re.fullmatch(rf"vae-digits-seed0: \[{i}/{len(names)}\] {name} (done|does not apply) in ([\d.]+) s", line)
        assert m, line
        assert (m[1] == "done") == metrics["run"]["evaluated"][name]
        assert float(m[2]) == pytest.approx(metrics["timing"][f"{name}_seconds"], abs=0.05)
        total += float(m[2])
        assert any(snapshot.endswith(line + "\n") for snapshot in out.flushed), f"{name}'s line was not flushed"
    assert total <= wall + 0.05 * len(names)  # each printed time is rounded to 0.1 s: up to 0.05 s high each
    assert lines[-1].endswith(f"wrote {tiny_run['run'] / 'metrics.json'}")


@pytest.mark.parametrize("target, results", [("bench", "results"), ("smoke", "results/smoke")])
def test_make_grid_targets_end_by_saying_where_the_results_are(target, results, tmp_path):
    """`make bench` / `make smoke` with a stand-in snakemake (the real grids take minutes to hours): the last lines
    name the grid's matrix, one verdict line per model of its matrix.csv, and the report; a failed snakemake
    points to the logs and keeps its exit status; the venv's bin comes first on Snakemake's PATH. Run on a copy of
    the committed tables, so a smoke grid that was never run here is covered too."""
    import shutil

    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on PATH")
    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(repo / "Makefile", work)
    shutil.copytree(repo / "results" / "tables", work / results / "tables")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    fake = venv / "bin" / "snakemake"
    fake.write_text('#!/bin/sh\necho "$PATH" > "$0.path"\nexit "${FAKE_STATUS:-0}"\n')  # records the PATH it got
    fake.chmod(0o755)
    stamp = venv / ".dgmbench-installed"  # -o: the venv counts as set up, whatever the time stamps say
    argv = [make, "-s", "-o", str(stamp), target, f"VENV={venv}"]

    proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"make {target}: snakemake finished with status 0")
    assert lines[1] == f"comparison matrix: {results}/tables/matrix.md"
    with open(work / results / "tables" / "matrix.csv", newline="") as f:
        models = [row["model"] for row in csv.DictReader(f)]
    rows = lines[2 : 2 + len(models)]
    assert [line.split()[1] for line in rows] == models
    assert all(re.search(r"training \S+, likelihood \S+, sampling \S+, lossy \S+, lossless \S+; vs lecture", r)
               for r in rows)
    assert lines[-1].startswith(f"report: {results}/report.html")
    # Snakemake's jobs find the venv's dgmbench first, with VENV given as an absolute path too.
    assert Path(str(fake) + ".path").read_text().split(":")[0] == str(venv / "bin")

    failed = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60, env={**os.environ, "FAKE_STATUS": "3"})
    assert failed.returncode != 0 and f"{results}/logs/" in failed.stderr
    assert "comparison matrix" not in failed.stdout
