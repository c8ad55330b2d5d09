"""A grid through a real single-node SLURM cluster (workflow/slurm/local_cluster.sh) with the slurm profile:
every job goes through sbatch and completes there, and the metrics and tables equal those of a local run of the
same grid (timing columns aside).

The grid is a tiny one written into the test's directory: two families that between them fill every table (an
exact likelihood with a real entropy coder; a latent-variable bound with IWAE, an encoder and a lossy codec), one
seed, the training and evaluation settings of tests/test_parallel.py. It is the plumbing under test (sbatch, the
jobstep, squeue polling, outputs on the shared filesystem), not the numbers. Two runs fill the node's two slots,
so each stage (train, evaluate, tables) is one wave of jobs. The plugin's squeue polls back off after a change
(I, 2I+10, 3I+30 s with I = 4 s here, local_cluster.sh's default): a wave takes ~14 s on two quiet cores (a
job under sbatch runs Snakemake twice more, ~9 s of it) and is seen by the 18 s poll; the whole test takes
~75 s, half of it the local reference run and polling.

Skipped, with the reason, where SLURM cannot start here (packages not installed, not root, the executor plugin
missing). `.ci/run` installs the packages first: `apt-get install -y slurmctld slurmd slurm-client munge`."""

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
from conftest import TINY_EVAL, TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "slurm" / "local_cluster.sh"
MODELS = ["arm", "vae"]
# Wall-clock columns, and "vs lecture", which reads the timing-based sampling verdict.
TIMING = re.compile(r"seconds|samples/s|per s|/s\b|(?<= )s\b(?!\.)|wall|cpu|start-up|time|speed|sampl|lecture", re.IGNORECASE)


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


def tiny_grid(tmp: Path) -> Path:
    cfg = {"datasets": ["digits"], "models": MODELS, "seeds": [0], "device": "cpu", "threads": 1,
           "tracking_uri": None, "experiment": "slurm", "train": {"all": TINY_TRAIN}, "eval": TINY_EVAL}
    path = tmp / "grid.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.mark.heavy
def test_grid_through_sbatch_matches_local(cluster, tmp_path):
    state = cluster
    grid = tiny_grid(tmp_path)
    num_runs = len(MODELS)
    work, local = tmp_path / "slurm", tmp_path / "local"

    proc = subprocess.run([str(SCRIPT), "run-smoke", str(work), str(grid)],
                          env={**env(state), "DGMBENCH_SLURM_TIMEOUT": "400"}, capture_output=True, text=True,
                          timeout=440)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # Every job (train and evaluate per run; tables) was submitted with sbatch, accepted by slurmctld, and
    # exited 0 there.
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) == 2 * num_runs + 1, out[-3000:]
    ctld_log = (state / "log" / "slurmctld.log").read_text()
    for jid in submitted:
        assert re.search(rf"_slurm_rpc_submit_batch_job: JobId={jid}\b", ctld_log), f"job {jid} not in slurmctld.log"
        assert re.search(rf"_job_complete: JobId={jid} WEXITSTATUS 0\b", ctld_log), f"job {jid} did not exit 0"

    # A local run of the same grid gives the same metrics and tables.
    local.mkdir()
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(local),
                          "--cores", "2", "--configfile", str(grid)], env=env(state), capture_output=True,
                         text=True, timeout=300, cwd=local)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ours = sorted((local / "results" / "runs").glob("*/*/*/metrics.json"))
    assert len(ours) == num_runs
    for m in ours:
        theirs = work / m.relative_to(local)
        a, b = without_timing(json.loads(m.read_text())), without_timing(json.loads(theirs.read_text()))
        a["run"].pop("git_commit"), b["run"].pop("git_commit")
        assert a == b, f"{m.relative_to(local)} differs"
    mine, theirs = tables(work), tables(local)
    assert sorted(mine) == sorted(theirs) and mine
    for name in mine:
        pd.testing.assert_frame_equal(mine[name], theirs[name], obj=f"table {name}")
