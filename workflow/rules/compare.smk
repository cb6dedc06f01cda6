# Compare: Bhattacharyya coefficient and EMD of image maps, same vs different identity (Tables 3-6).


rule compare:
    input:
        code=code_stamp("compare"),  # the leam modules it runs: an edit reruns it
        image_maps=shard_outputs(rules.extract.output.image_maps, model="{model}"),
        aligned=shard_outputs(rules.align.output.aligned),  # landmarks: the geometry baseline's maps
    output:
        compare=results("compare/model={model}/compare.parquet"),
    log:
        logs("compare/{model}.log"),
    benchmark:
        results("benchmarks/compare/{model}.tsv")
    conda:
        "../envs/leam.yaml"
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        options=lambda wildcards: OPTIONS.compare[wildcards.model],
    script:
        "../scripts/compare.py"
