# Shared definitions: the validated grid, the list of runs, and the per-run config hash that makes Snakemake
# rerun a job when that run's settings change.
import hashlib
import json
import os
import sys

import yaml

REPO = os.path.abspath(os.path.join(workflow.basedir))
# Jobs run `python -m dgmbench`; with the repository on PYTHONPATH this works from a pip install and from a
# `--use-conda` environment alike (environment.yml installs the dependencies, not necessarily the package).
os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")

GRID = dict(config)
try:  # the deep check (registries, dataclass keys and types) needs the package and torch
    sys.path.insert(0, REPO)
    from dgmbench.config import ConfigError, validate_grid
except ImportError as err:  # e.g. snakemake itself runs outside the conda env: jobs re-check on start
    print(f"dgmbench not importable here ({err}); config checked against the schema only", file=sys.stderr)
else:
    try:
        GRID = validate_grid(GRID)
    except (ConfigError, KeyError) as err:
        raise WorkflowError(f"invalid config: {err}")

if GRID.get("models") is None:
    raise WorkflowError("config: list the models explicitly (models: null needs the dgmbench package importable)")

RUNS = GRID.get("runs_dir", "results/runs")
RESULTS = GRID.get("results_dir", "results")
LOGS = f"{RESULTS}/logs"
PYTHON = "python -m dgmbench"

# The grid as the jobs see it, written once per invocation (only if it changed, so its mtime stays put).
GRID_FILE = f"{LOGS}/grid-config.yaml"
_text = yaml.safe_dump(GRID, sort_keys=True)
os.makedirs(LOGS, exist_ok=True)
if not os.path.exists(GRID_FILE) or open(GRID_FILE).read() != _text:
    with open(GRID_FILE, "w") as fh:
        fh.write(_text)

RUN_DIR = RUNS + "/{dataset}/{model}/seed{seed}"

wildcard_constraints:
    dataset=r"[A-Za-z0-9_.\-]+",
    model=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",


def run_settings_hash(wildcards):
    """Hash of everything in the grid that can change this run's result."""
    variant = GRID.get("variants", {}).get(wildcards.model, {})
    base = variant.get("model", wildcards.model)
    train = GRID.get("train", {})
    hparams = GRID.get("hparams", {})
    relevant = {
        "train": [train.get("all", {}), train.get(base, {}), variant.get("train", {})],
        "hparams": [hparams.get(base, {}), variant.get("hparams", {})],
        "device": GRID.get("device", "auto"),
        "data_root": GRID.get("data_root"),
    }
    return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def eval_settings_hash(wildcards):
    return hashlib.sha1(json.dumps(GRID.get("eval", {}), sort_keys=True).encode()).hexdigest()[:12]


ALL_METRICS = expand(
    f"{RUNS}/{{dataset}}/{{model}}/seed{{seed}}/metrics.json",
    dataset=GRID["datasets"],
    model=GRID["models"],
    seed=GRID["seeds"],
)
