# Shared definitions: the validated grid, the list of runs, and each job's own copy of the settings it runs with.
#
# Nothing is written while this file is parsed. Each train/evaluate job is handed its run's settings as a JSON
# param (job_grid below) and the command receives them as text (--config-json), so no file is shared between
# invocations: a second `snakemake` (or `snakemake -n`) with another config cannot change what a running job
# reads, and since Snakemake reruns a job whose params changed, a run trained with other settings is never
# counted as up to date. Every value put into a shell command is quoted (`:q`), and the config's paths and names
# are restricted to safe characters (dgmbench.config.check_results_path, check_name): they are data, never code.
import json
import os
import sys

REPO = os.path.abspath(os.path.join(workflow.basedir))
# Jobs run `python -m dgmbench`; with the repository on PYTHONPATH this works from a pip install and from a
# `--use-conda` environment alike (workflow/envs/dgmbench.yaml installs the dependencies, not the package).
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

# The eval section, for the train job's evaluation in its own process (`dgmbench train --evaluate-pending`). Not a
# param of the train rule, so a change to it does not retrain: the evaluate job sees the change in its own params
# and evaluates again (the pending evaluation's key no longer matches, dgmbench/pending.py).
from dgmbench.cli import EVAL_ENV  # the variable's name, where the train command reads it (no torch imported)

os.environ[EVAL_ENV] = json.dumps(GRID.get("eval", {}), sort_keys=True)

RUNS = GRID.get("runs_dir", "results/runs")
RESULTS = GRID.get("results_dir", "results")
LOGS = f"{RESULTS}/logs"
PYTHON = "python -m dgmbench"

RUN_DIR = RUNS + "/{dataset}/{model}/seed{seed}"

# MLflow: by default each job appends what it logs to its run's journal (`--tracking journal`, dgmbench/journal.py); the
# track rule, once every run is evaluated, writes the journals into the store: one MLflow start-up per grid instead
# of one per job (~2 CPU s each). `tracking_live: true` writes the store from every job as it runs (the UI then
# shows a run's curves while it trains) and leaves the track rule out.
LIVE = bool(GRID.get("tracking_live", False))
TRACKING = "live" if LIVE else "journal"  # a global, not a param: switching it does not rerun trained jobs
TRACKED = [] if LIVE else [f"{LOGS}/mlflow-track.log"]

wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    seed=r"\d+",


from dgmbench.config import run_grid  # imports no model, metric or torch: works in Snakemake's own environment
from dgmbench.schedule import measured_costs, priority  # standard library only


# The longest runs start first (dgmbench/schedule.py): each train job's priority is what its run cost last time,
# from the committed cost table. Snakemake ≥ 9.x takes a function of the wildcards here; an older one gets no order.
COSTS = measured_costs(f"{RESULTS}/tables/cost.csv")


def train_priority(wildcards):
    return priority(COSTS, wildcards.dataset, wildcards.model)


try:
    from snakemake.rules import Rule as _Rule

    TRAIN_PRIORITY = train_priority if hasattr(_Rule, "expand_priority") else 0
except ImportError:
    TRAIN_PRIORITY = 0


def job_grid(wildcards, evaluation=False):
    """The grid narrowed to one run, as JSON (dgmbench.config.run_grid): what can change that run's training and,
    for evaluation, the eval section. A change to another model's settings, or to eval (for training), leaves the
    param, and so the job, as it is."""
    grid = run_grid(GRID, dataset=wildcards.dataset, model=wildcards.model, seed=int(wildcards.seed),
                    evaluation=evaluation)
    return json.dumps(grid, sort_keys=True)


def eval_grid(wildcards):
    return job_grid(wildcards, evaluation=True)


ALL_METRICS = expand(
    f"{RUNS}/{{dataset}}/{{model}}/seed{{seed}}/metrics.json",
    dataset=GRID["datasets"],
    model=GRID["models"],
    seed=GRID["seeds"],
)
