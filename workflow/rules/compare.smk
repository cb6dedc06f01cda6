# Compare: Bhattacharyya coefficient and EMD of image maps, same vs different identity (Tables 3-6).


rule compare:
    input:
        image_maps=shard_outputs(rules.extract.output.image_maps, model="{model}"),
    output:
        compare=results("compare/model={model}/compare.parquet"),
    params:
        size=config["align"]["size"],
        selections=config["compare"]["selections"],
        grid=config["compare"]["grid"],
        different_per_image=config["compare"]["different_per_image"],
        seed=config["seed"],
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/leam.yaml"
    log:
        logs("compare/{model}.log"),
    benchmark:
        results("benchmarks/compare/{model}.tsv")
    script:
        "../scripts/compare.py"
