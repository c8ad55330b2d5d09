# dgmbench: train every model family across datasets and seeds, evaluate, and rebuild results/.
#   pip users:    make bench          (or: snakemake --cores 2)
#   conda users:  snakemake --cores 8 --use-conda
#   another grid: snakemake --cores 2 --configfile config/smoke.yaml
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


# `--config 'seeds=[0,1]'` (README) hands the list's items over as strings; seeds are integers.
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in config["seeds"]]

validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/track.smk"


# The runs are targets too, not only the tables: results/tables is committed, so on a fresh clone (or after
# `make clean-results`) the tables already exist and Snakemake would otherwise see nothing to do. A missing
# metrics.json makes its train/evaluate jobs run, and the new metrics then make the tables rule run again.
rule all:
    input:
        ALL_METRICS,
        f"{RESULTS}/tables",
        f"{RESULTS}/figures",
        TRACKED,
