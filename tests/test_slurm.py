"""The smoke grid through a real single-node SLURM cluster (workflow/slurm/local_cluster.sh) with the slurm
profile: every job goes through sbatch, and the tables equal those of a local run (timing columns aside).

Skipped, with the reason, where SLURM cannot start here (packages not installed, not root, the executor plugin
missing). CI installs the packages first: `apt-get install -y slurmctld slurmd slurm-client munge`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dgmbench.evaluate import without_timing

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "slurm" / "local_cluster.sh"
SMOKE = REPO / "config" / "smoke.yaml"
# Wall-clock columns, and "vs lecture", which reads the timing-based sampling verdict.
TIMING = re.compile(r"seconds|samples/s|per s|/s\b|time|speed|sampl|lecture", re.IGNORECASE)


def why_not() -> str | None:
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged") if shutil.which(b) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): apt-get install -y slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "starting a local SLURM cluster needs root"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm not installed: pip install '.[slurm]'"
    return None


def env(state: Path) -> dict:
    e = {**os.environ, "DGMBENCH_SLURM_DIR": str(state), "PYTHON": sys.executable,
         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    up = subprocess.run(["timeout", "-s", "KILL", "90", str(SCRIPT), "start"], env=env(state),
                        capture_output=True, text=True)
    try:
        if up.returncode != 0:
            pytest.skip(f"SLURM could not start here: {(up.stdout + up.stderr)[-1500:]}")
        yield state
    finally:
        subprocess.run(["timeout", "-s", "KILL", "60", str(SCRIPT), "stop"], env=env(state), capture_output=True)


def tables(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every results table, minus the columns that hold wall-clock measurements."""
    out = {}
    for path in sorted((workdir / "results" / "tables").glob("*.csv")):
        df = pd.read_csv(path)
        out[path.stem] = df[[c for c in df.columns if not TIMING.search(c)]]
    return out


@pytest.mark.heavy
def test_smoke_grid_through_sbatch_matches_local(cluster, tmp_path):
    state = cluster
    work = tmp_path / "slurm"
    proc = subprocess.run([str(SCRIPT), "run-smoke", str(work)], env={**env(state), "DGMBENCH_SLURM_TIMEOUT": "600"},
                          capture_output=True, text=True, timeout=660)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # Every job (train, evaluate per run; tables) was submitted with sbatch and accepted by slurmctld.
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    cfg = json.loads(json.dumps(__import__("yaml").safe_load(SMOKE.read_text())))
    num_runs = len(cfg["datasets"]) * len(cfg["models"]) * len(cfg["seeds"])
    assert len(submitted) == 2 * num_runs + 1, out[-3000:]
    ctld_log = (state / "log" / "slurmctld.log").read_text()
    for jid in submitted:
        assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={jid}\b", ctld_log), f"job {jid} not in slurmctld.log"

    # A local run of the same grid gives the same metrics and tables.
    local = tmp_path / "local"
    local.mkdir()
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(local),
                          "--cores", "2", "--configfile", str(SMOKE)], env=env(state), capture_output=True,
                         text=True, timeout=600, cwd=local)
    assert run.returncode == 0, run.stderr[-3000:]
    for m in (local / "results" / "runs").glob("*/*/*/metrics.json"):
        theirs = work / m.relative_to(local)
        a, b = without_timing(json.loads(m.read_text())), without_timing(json.loads(theirs.read_text()))
        a["run"].pop("git_commit"), b["run"].pop("git_commit")
        assert a == b, f"{m.relative_to(local)} differs"
    mine, theirs = tables(work), tables(local)
    assert sorted(mine) == sorted(theirs) and mine
    for name in mine:
        pd.testing.assert_frame_equal(mine[name], theirs[name], obj=f"table {name}")
