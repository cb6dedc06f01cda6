# Align: per identity, a seeded reference photo (eye corners level) and every photo warped onto it.


rule align:
    input:
        code=code_stamp("align"),  # the leam modules it runs: an edit reruns it
        faces=rules.detect.output.faces,
    output:
        aligned=results("aligned/shard-{shard}.parquet"),
    log:
        logs("align/shard-{shard}.log"),
    benchmark:
        results("benchmarks/align/shard-{shard}.tsv")
    conda:
        "../envs/leam.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        size=config["align"]["size"],
        padding=config["align"]["padding"],
        seed=config["seed"],
        max_side=config["detect"]["max_side"],
    script:
        "../scripts/align.py"
