# Extract: LEAM maps of every ordered same-identity pair x configured layer, per model and shard.
# Outputs are per model, so adding a model to config.yaml runs only its jobs (and aggregation).


rule extract:
    input:
        aligned=rules.align.output.aligned,
    output:
        maps="results/maps/model={model}/shard-{shard}.parquet",
        pairs="results/pairs/model={model}/shard-{shard}.parquet",
        embeddings="results/embeddings/model={model}/shard-{shard}.parquet",
    params:
        spec=lambda wildcards: config["models"][wildcards.model],
        device=config["extract"]["device"],
        memory_budget_mb=config["extract"]["memory_budget_mb"],
        frame_padding=config["align"]["padding"],
    threads: workflow.cores
    resources:
        gpu=1,  # used when present; a CPU-only profile sets it to 0 (profiles/slurm-local)
        mem_mb=16000,
        runtime=240,  # minutes, for a shard of ~10 identities on one GPU
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/extract/{model}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/extract/{model}/shard-{shard}.tsv"
    script:
        "../scripts/extract.py"
