rule train:
    """Train one (dataset, model, seed) run; resumes from last.pt if an earlier job was killed. It then evaluates the
    run in the same process and leaves metrics.pending.json for the evaluate job (dgmbench/pending.py): one
    process start-up per run instead of two."""
    output:
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
        curve=f"{RUN_DIR}/curve.csv",
    log:
        f"{LOGS}/train/{{dataset}}/{{model}}/seed{{seed}}.log",
    params:
        grid=job_grid,
        out=RUN_DIR,
    threads: GRID.get("threads", 1)
    priority: TRAIN_PRIORITY
    conda:
        "../envs/dgmbench.yaml"
    shell:
        "{PYTHON} train --config-json {params.grid:q} --dataset {wildcards.dataset:q} --model {wildcards.model:q} "
        "--seed {wildcards.seed:q} --set threads={threads} --out {params.out:q} --evaluate-pending --tracking {TRACKING:q} "
        "> {log:q} 2>&1"
