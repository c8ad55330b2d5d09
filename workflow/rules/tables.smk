import logging


class OneMissingMetadataNote(logging.Filter):
    """`snakemake --report` warns once per output that has no run record in .snakemake/metadata. On a fresh clone
    that is every file of every run (~100 lines): the results came from git, not from a run in this checkout.
    This says it once, as a note, and drops the repeats; nothing else Snakemake logs is touched."""

    PREFIX = "Missing metadata for file "

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record):
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        if self.seen:
            return False
        self.seen = True
        first = message[len(self.PREFIX):].split(". Maybe", 1)[0]
        record.msg = (f"No Snakemake run record for {first} and the other outputs not made in this checkout (a fresh "
                      "clone's results come from git): the report shows them without run times.")
        record.args, record.levelno, record.levelname = (), logging.INFO, "INFO"
        return True


logging.getLogger("snakemake.logging").addFilter(OneMissingMetadataNote())


def figure_label(wildcards):
    """A figure's name in the report's list: its kind, and the model for one model's samples."""
    kind = wildcards.kind.replace("_", " ")
    return {"figure": f"{kind}: {wildcards.model}" if "model" in wildcards.keys() else kind}


rule tables:
    """Rebuild results/tables and results/figures from every metrics.json (nothing else is read)."""
    input:
        ALL_METRICS,
    output:
        # The report (`snakemake --report results/report.html`): each table as an HTML page with its own caption,
        # the matrix in a category of its own (the report lists categories by name, so it comes first), and each
        # figure with the caption of its kind, grouped by dataset.
        tables=report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category=lambda wildcards: "Comparison matrix" if wildcards.name == "matrix" else "Tables",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=[  # dataset names without "_", so samples_<dataset>_<model> reads one way only
                "{kind,nll_vs_speed|training_curves|rate_distortion|anytime|samples}_{dataset,[^_]+}.png",
                "{kind,samples}_{dataset,[^_]+}_{model}.png",
            ],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{dataset}",
            labels=figure_label,
        ),
    log:
        f"{LOGS}/tables.log",
    params:
        runs=RUNS,
        out=RESULTS,
    conda:
        "../envs/dgmbench.yaml"
    shell:
        "{PYTHON} tables --runs {params.runs:q} --out {params.out:q} > {log:q} 2>&1"
