rule train:
    """Train one (dataset, model, seed) run; resumes from last.pt if an earlier job was killed."""
    output:
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
        curve=f"{RUN_DIR}/curve.csv",
    log:
        f"{LOGS}/train/{{dataset}}/{{model}}/seed{{seed}}.log",
    params:
        grid=GRID_FILE,
        out=RUN_DIR,
        settings=run_settings_hash,
    threads: GRID.get("threads", 1)
    conda:
        "../../environment.yml"
    shell:
        "{PYTHON} train --config {params.grid} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} --set threads={threads} --out {params.out} > {log} 2>&1"
