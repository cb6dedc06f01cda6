# Parse: FaRL-class label maps of the aligned frames.


rule parse:
    input:
        code=code_stamp("parse"),  # the leam modules it runs: an edit reruns it
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
        gpu=GPU if config["parser"]["name"] == "farl" else 0,  # the landmark parser needs no torch device
        mem_mb=8000,
        runtime=60,
    params:
        options=OPTIONS.parse,
    script:
        "../scripts/parse.py"
