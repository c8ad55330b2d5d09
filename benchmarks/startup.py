"""What a dgmbench process costs before it does any work: import times and the fixed cost of one tiny job.

A benchmark, not a test: it prints one table. Every figure is the median of ``--repeats`` fresh processes (each
started the way Snakemake starts a job: ``python -m dgmbench ...``, one torch thread), in wall seconds and in the
process's own CPU seconds (user + system, from ``getrusage`` of the child). CPU seconds move less with the load
of a shared machine than wall seconds do; the load average and the core count are printed so a reader can judge.

Rows:
  python                   ``python -c pass``: the interpreter alone
  import torch             ``import torch``
  dgmbench --help          the parser (no torch, no model, no metric)
  dgmbench list            every registered model and dataset (the same)
  train imports            what a train job imports before its loop: dgmbench.train, the grid check
                           (``validate_grid``) and the first Adam optimizer (dgmbench.optim's)
  evaluate imports         dgmbench.evaluate and the grid check
  train job, fixed         a 1-epoch ``dgmbench train`` of the VAE on 64 digits, minus its training loop's seconds
                           (``train_seconds``, the loop's wall time; one thread, so ≈ its CPU time on a quiet machine)
  evaluate job, fixed      ``dgmbench evaluate --only likelihood`` of that run, minus the evaluators' seconds
  train+evaluate, fixed    ``dgmbench train --evaluate``: both in one process, writing the MLflow store as it goes
                           (``tracking_live: true``), minus the loop's and every evaluator's seconds
  journal, first seed      the same with ``--tracking journal``: what the workflow's train job does by default
                           (dgmbench/pending.py, dgmbench/journal.py), minus the same seconds, for the first seed
                           of a configuration, which counts the training step's FLOPs (importing torch._dynamo)
  journal, other seeds     the same job once the FLOP count is cached (dgmbench.train.cached_train_step_flops)
  track, once per grid     ``dgmbench track`` writing the journals of those runs into a fresh store: paid once by
                           a grid, not per job (its whole cost, work included)
The "beyond torch" column is a row's figure minus ``import torch``'s (the issue's target: ≤ 1.5 s per job; the
workflow's jobs are the "journal" rows: one first seed and two others per family in the default grid).

    nice -n 10 .venv/bin/python benchmarks/startup.py                 # 5 repeats
    nice -n 10 .venv/bin/python benchmarks/startup.py --repeats 3

Measured 2026-12-06 on a quiet 2-core Intel Xeon (load 0.7-0.9), torch 2.14.1, median of 3 (wall / CPU s):

    python 0.02 / 0.02; import torch 1.67 / 1.67; dgmbench --help 0.04 / 0.04; dgmbench list 0.14 / 0.14;
    train imports 3.22 / 3.22 (1.55 CPU s beyond torch: torch._dynamo, which the optimizer's methods import, and
    the grid check); evaluate imports 1.84 / 1.84 (0.18 beyond torch);
    train job, fixed 6.42 / 6.41; evaluate job, fixed 4.28 / 4.28; train+evaluate in one process, fixed 6.38 / 6.37.

So a run trained and evaluated in one process (the workflow's train job, dgmbench/pending.py) costs 4.3 s less
than in two; beyond torch, a train job's fixed cost is 4.7 s (MLflow's client and store, torch._dynamo, the FLOP
count and the sample grid), over the issue's 1.5 s target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORTS = {  # row → python code timed in a fresh process
    "python": "pass",
    "import torch": "import torch",
    "train imports": ("import torch, dgmbench.train; from dgmbench.config import validate_grid; validate_grid({}); "
                      "from dgmbench.optim import Adam; Adam([torch.zeros(1, requires_grad=True)])"),
    "evaluate imports": "import dgmbench.evaluate; from dgmbench.config import validate_grid; validate_grid({})",
}
TINY_GRID = {  # the job the per-job rows time: one epoch of the VAE on 64 digits, one likelihood bound
    "datasets": ["digits"], "models": ["vae"], "seeds": [0], "device": "cpu", "threads": 1,
    "train": {"all": {"max_epochs": 1, "num_train": 64, "num_val": 64, "batch_size": 64, "patience": 0}},
    "eval": {"likelihood": {"iwae_k": 2, "iwae_repeats": 1}, "test_subset": {"max_images": 64}},
}


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process; CPU = its user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_pair(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="processes per row; the table shows medians (default 5)")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be ≥ 1")

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    py = sys.executable
    load_before = os.getloadavg()
    rows: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dgmbench-startup-") as tmp:
        work = Path(tmp)
        (work / "grid.json").write_text(json.dumps(TINY_GRID))
        for name, code in IMPORTS.items():
            rows[name] = median_pair([timed([py, "-c", code], work, env) for _ in range(args.repeats)])
        for name, cli in (("dgmbench --help", ["--help"]), ("dgmbench list", ["list"])):
            rows[name] = median_pair([timed([py, "-m", "dgmbench", *cli], work, env) for _ in range(args.repeats)])

        train_fixed, eval_fixed = [], []
        for i in range(args.repeats):
            run = work / "runs" / f"r{i}"
            wall, cpu = timed([py, "-m", "dgmbench", "train", "--dataset", "digits", "--model", "vae", "--config",
                               "grid.json", "--out", str(run)], work, env)
            metrics_cmd = [py, "-m", "dgmbench", "evaluate", "--run", str(run), "--only", "likelihood",
                           "--config", "grid.json"]
            ewall, ecpu = timed(metrics_cmd, work, env)
            timing = json.loads((run / "metrics.json").read_text())["timing"]
            loop = timing["train_seconds"]
            evaluators = sum(v for k, v in timing.items() if k != "train_seconds" and k.endswith("_seconds"))
            train_fixed.append((wall - loop, cpu - loop))
            eval_fixed.append((ewall - evaluators, ecpu - evaluators))
        rows["train job, fixed"] = median_pair(train_fixed)
        rows["evaluate job, fixed"] = median_pair(eval_fixed)
        both_fixed = []
        for i in range(args.repeats):
            run = work / "runs" / f"both{i}"
            wall, cpu = timed([py, "-m", "dgmbench", "train", "--dataset", "digits", "--model", "vae", "--config",
                               "grid.json", "--out", str(run), "--evaluate"], work, env)
            timing = json.loads((run / "metrics.json").read_text())["timing"]
            work_s = sum(v for k, v in timing.items() if k.endswith("_seconds"))  # the loop and every evaluator
            both_fixed.append((wall - work_s, cpu - work_s))
        rows["train+evaluate, fixed"] = median_pair(both_fixed)
        journal_first, journal_fixed = [], []
        for i in range(args.repeats):
            for kind, samples in (("first", journal_first), ("other", journal_fixed)):
                if kind == "first":  # no FLOP count cached for this configuration yet: this job counts it
                    shutil.rmtree(work / "results" / "cache" / "flops", ignore_errors=True)
                run = work / "journalled" / f"{kind}{i}"
                wall, cpu = timed([py, "-m", "dgmbench", "train", "--dataset", "digits", "--model", "vae", "--config",
                                   "grid.json", "--out", str(run), "--evaluate", "--tracking", "journal"], work, env)
                timing = json.loads((run / "metrics.json").read_text())["timing"]
                work_s = sum(v for k, v in timing.items() if k.endswith("_seconds"))
                samples.append((wall - work_s, cpu - work_s))
        rows["journal, first seed"] = median_pair(journal_first)
        rows["journal, other seeds"] = median_pair(journal_fixed)
        rows["track, once per grid"] = timed([py, "-m", "dgmbench", "track", "--runs", str(work / "journalled"),
                                              "--tracking-uri", f"sqlite:///{work / 'track.db'}"], work, env)
    load_after = os.getloadavg()

    order = ["python", "import torch", "dgmbench --help", "dgmbench list", "train imports", "evaluate imports",
             "train job, fixed", "evaluate job, fixed", "train+evaluate, fixed", "journal, first seed",
             "journal, other seeds", "track, once per grid"]
    torch_wall, torch_cpu = rows["import torch"]
    print(f"median of {args.repeats} processes; {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1-min)")
    print(f"{'':<24} {'wall s':>7} {'CPU s':>7}   {'beyond torch: wall':>18} {'CPU':>6}")
    for name in order:
        wall, cpu = rows[name]
        beyond = (f"{wall - torch_wall:18.2f} {cpu - torch_cpu:6.2f}" if name not in ("python", "import torch",
                  "dgmbench --help", "dgmbench list", "track, once per grid") else f"{'':>18} {'':>6}")
        print(f"{name:<24} {wall:7.2f} {cpu:7.2f}   {beyond}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
