# Detect + filter: one face per photo, 68 landmarks, rejects and duplicates recorded with reasons.


rule detect:
    input:
        code=code_stamp("detect"),  # the leam modules it runs: an edit reruns it
        images=shard_images,
        stamp=shard_stamp,  # the photos' sha256: a replaced photo reruns detect whatever its mtime
    output:
        faces=results("faces/shard-{shard}.parquet"),
    log:
        logs("detect/shard-{shard}.log"),
    benchmark:
        results("benchmarks/detect/shard-{shard}.tsv")
    conda:
        "../envs/leam.yaml"
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        options=OPTIONS.detect,
        unusable=shard_unusable,
    script:
        "../scripts/detect.py"
