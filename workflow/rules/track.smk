rule track:
    """Write every run's MLflow journal into the tracking store (`dgmbench track`): the params, per-epoch curves,
    tags, artifacts and test metrics the train and evaluate jobs journalled, with their steps and timestamps. Only
    entries the store does not hold yet are written, so it runs again after any run is (re)evaluated. Its log, the
    output, lists what it wrote. Not in the grid when tracking_live is true (jobs then write the store themselves)."""
    input:
        ALL_METRICS,
    output:
        f"{LOGS}/mlflow-track.log",
    params:
        runs=RUNS,
    localrule: True
    conda:
        "../envs/dgmbench.yaml"
    shell:
        "{PYTHON} track --runs {params.runs:q} > {output:q}.tmp 2>&1 && mv {output:q}.tmp {output:q} "
        "|| {{ cat {output:q}.tmp >&2; exit 2; }}"
