rule evaluate:
    """Evaluate a trained run on the test split: writes metrics.json and logs it to the run's MLflow run. The train
    job has usually evaluated it already (metrics.pending.json): that evaluation is taken if it was computed from
    this checkpoint with these settings and this code, and made again here otherwise (a changed eval section)."""
    input:
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
    output:
        metrics=f"{RUN_DIR}/metrics.json",
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{model}}/seed{{seed}}.log",
    params:
        grid=eval_grid,
        run=RUN_DIR,
    threads: GRID.get("threads", 1)
    conda:
        "../envs/dgmbench.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {PYTHON} evaluate --config-json {params.grid:q} --run {params.run:q} --adopt-pending --tracking {TRACKING:q} > {log:q} 2>&1"
