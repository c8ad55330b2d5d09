rule tables:
    """Rebuild results/tables and results/figures from every metrics.json (nothing else is read)."""
    input:
        ALL_METRICS,
    output:
        tables=report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
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
