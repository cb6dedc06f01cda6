# Parse: FaRL-class label maps of the aligned frames.


rule parse:
    input:
        aligned=rules.align.output.aligned,
    output:
        labels=results("labels/shard-{shard}.parquet"),
    params:
        parser=config["parser"],
        device=config["extract"]["device"].replace("auto", "cpu"),
    resources:
        gpu=1 if config["parser"]["name"] == "farl" else 0,
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/leam.yaml"
    log:
        logs("parse/shard-{shard}.log"),
    benchmark:
        results("benchmarks/parse/shard-{shard}.tsv")
    script:
        "../scripts/parse.py"
