# Parse: FaRL-class label maps of the aligned frames.


rule parse:
    input:
        aligned=rules.align.output.aligned,
    output:
        labels=results("labels/shard-{shard}.parquet"),
    log:
        logs("parse/shard-{shard}.log"),
    benchmark:
        results("benchmarks/parse/shard-{shard}.tsv")
    conda:
        "../envs/leam.yaml"
    resources:
        gpu=1 if config["parser"]["name"] == "farl" else 0,
        mem_mb=8000,
        runtime=60,
    params:
        parser=config["parser"],
        device=config["extract"]["device"].replace("auto", "cpu"),
    script:
        "../scripts/parse.py"
