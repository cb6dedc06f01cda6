# Count: pixels per face-parser class at the full threshold and the top-k levels -> wide Parquet.


rule count:
    input:
        maps=rules.extract.output.maps,
        labels=rules.parse.output.labels,
    output:
        counts="results/counts/model={model}/shard-{shard}.parquet",
    params:
        levels=config["count"]["levels"],
        full_threshold=config["count"]["full_threshold"],
        topk_of=config["count"]["topk_of"],
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/count/{model}/shard-{shard}.log",
    script:
        "../scripts/count.py"
