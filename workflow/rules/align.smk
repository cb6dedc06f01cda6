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
        options=OPTIONS.align,
    script:
        "../scripts/align.py"
