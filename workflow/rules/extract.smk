# Extract: LEAM maps of every ordered same-identity pair x configured layer, per model and shard,
# and, while they are in memory, what later stages need of them: per-class counts at every
# relevance selection, per-image maps (compare, atlas), pixel rankings (occlusion), and the raw
# maps themselves as extract.store_maps says (lib/leam/core/summaries.py).
# Outputs are per model, so adding a model to config/config.yaml runs only its jobs (and aggregation).


rule preflight:
    # what would stop a model's extract job (a layer that is no module, weights that do not fit, a
    # device this machine lacks), found in seconds, before the long jobs: run first (priority)
    input:
        code=code_stamp("preflight"),  # the leam modules it runs: an edit reruns it
        weights=weight_stamp,  # the weight files' sha256: replaced weights rerun the model's jobs
    output:
        ok=results("preflight/{model}.txt"),
    log:
        logs("preflight/{model}.log"),
    priority: 100
    conda:
        "../envs/leam.yaml"
    resources:
        gpu=GPU,  # where extract runs: the device is checked there
        mem_mb=4000,
        runtime=10,
    params:
        spec=lambda wildcards: config["models"][wildcards.model],
        device=DEVICE,
        frame_padding=config["align"]["padding"],
    script:
        "../scripts/preflight.py"


rule extract:
    input:
        code=code_stamp("extract"),  # the leam modules it runs: an edit reruns it
        aligned=rules.align.output.aligned,
        labels=rules.parse.output.labels,
        preflight=rules.preflight.output.ok,
        weights=weight_stamp,
    output:
        pairs=results("pairs/model={model}/shard-{shard}.parquet"),
        embeddings=results("embeddings/model={model}/shard-{shard}.parquet"),
        counts=results("counts/model={model}/shard-{shard}.parquet"),
        image_maps=results("image_maps/model={model}/shard-{shard}.parquet"),
        rankings=results("rankings/model={model}/shard-{shard}.parquet"),
        maps=results("maps/model={model}/shard-{shard}.parquet"),
    log:
        logs("extract/{model}/shard-{shard}.log"),
    benchmark:
        results("benchmarks/extract/{model}/shard-{shard}.tsv")
    conda:
        "../envs/leam.yaml"
    threads: lambda wildcards: workflow.cores or 1  # all the cores; a callable, so --unlock needs no --cores
    resources:
        gpu=GPU,  # used when present; a CPU-only profile sets it to 0 (profiles/slurm-local)
        mem_mb=16000,
        runtime=240,  # minutes, for a shard of ~10 identities on one GPU
    params:
        options=lambda wildcards: OPTIONS.extract[wildcards.model],
    script:
        "../scripts/extract.py"
