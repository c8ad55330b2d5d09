"""Train each family on digits with its default config and print test NLL, epochs, wall time and sampling speed.

A benchmark, not a test: it prints figures. Each run is the same `dgmbench train` + `dgmbench evaluate` the
pipeline runs, in a scratch directory (its own MLflow store), one thread per process.

    .venv/bin/python benchmarks/families.py                       # the likelihood families, seed 0
    .venv/bin/python benchmarks/families.py --models arm vae --seeds 0 1 2
    .venv/bin/python benchmarks/families.py --from-runs results/runs   # summarise runs already made (make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIKELIHOOD_FAMILIES = ["arm", "idf", "flow", "vae", "hvae", "diffusion"]
GRID = Path(__file__).resolve().parents[1] / "config" / "config.yaml"  # its eval: settings, as the pipeline uses


def row(m: dict, wall: float | None) -> str:
    """One line of a metrics.json, read through its typed results."""
    from dgmbench.results import RunRecord

    rec = RunRecord.from_dict(m)
    lik, sampling = rec.get("likelihood"), rec.get("sampling")
    nll = (f"{lik.nll_nats:8.2f} {lik.nll_bpd:7.3f}  {lik.estimator:<22}" if lik is not None and lik.nll_nats is not None
           else f"{'—':>8} {'—':>7}  {'none':<22}")
    speed = sampling.best()[1] if sampling is not None else None
    wall_s = f"{wall:7.1f}" if wall is not None else f"{rec.timing['train_seconds']:7.1f}"
    return (f"{rec.info.model:<10} {rec.info.seed:>4}  {nll} {rec.info.epochs_run:>6} {wall_s} "
            f"{(f'{speed:10.1f}' if speed else '         —')}")


HEADER = f"{'model':<10} {'seed':>4}  {'NLL nats':>8} {'bits/d':>7}  {'estimator':<22} {'epochs':>6} {'train s':>7} {'samples/s':>10}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=LIKELIHOOD_FAMILIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--from-runs", help="summarise existing run directories instead of training")
    args = p.parse_args()

    print(HEADER)
    if args.from_runs:
        for path in sorted(Path(args.from_runs).glob(f"{args.dataset}/*/seed*/metrics.json")):
            m = json.loads(path.read_text())
            if m["run"]["model"] in args.models and m["run"]["seed"] in args.seeds:
                print(row(m, None), flush=True)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="dgmbench-bench-") as tmp:
        for model in args.models:
            for seed in args.seeds:
                out = Path(tmp) / model / f"seed{seed}"
                t0 = time.perf_counter()
                for cmd in (["train", "--dataset", args.dataset, "--model", model, "--seed", str(seed), "--out", str(out)],
                            ["evaluate", "--config", str(GRID), "--run", str(out)]):
                    subprocess.run([sys.executable, "-m", "dgmbench", *cmd], cwd=tmp, env=env, check=True,
                                   stdout=subprocess.DEVNULL)
                    if cmd[0] == "train":
                        wall = time.perf_counter() - t0
                print(row(json.loads((out / "metrics.json").read_text()), wall), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
