# Occlude: LEAM-guided vs random black-pixel occlusion, from every source model to every model
# (Table 9, Fig. 8, Table 21), and the identity atlas of the first source (own / identity /
# population / random pixels). One job per target model and shard: adding a target model adds only
# its own jobs; adding a source reruns the occlusion jobs.


rule population_atlas:
    input:
        code=code_stamp("population_atlas"),  # the leam modules it runs: an edit reruns it
        image_maps=shard_outputs(rules.extract.output.image_maps, model=OCCLUDE_SOURCE),
    output:
        population=results("occlusion/population.parquet"),
    log:
        logs("occlude/population.log"),
    benchmark:
        results("benchmarks/population_atlas/population.tsv")
    conda:
        "../envs/leam.yaml"
    params:
        options=OPTIONS.population,
    script:
        "../scripts/population_atlas.py"


rule occlude:
    input:
        code=code_stamp("occlude"),  # the leam modules it runs: an edit reruns it
        aligned=rules.align.output.aligned,
        rankings=expand(rules.extract.output.rankings, model=[m for m, _ in OCCLUDE_SOURCES], allow_missing=True),
        own_maps=expand(rules.extract.output.image_maps, model=OCCLUDE_SOURCE, allow_missing=True),
        population=rules.population_atlas.output.population,
        weights=weight_stamp,  # the target model's weight files (it re-embeds the occluded frames)
    output:
        occlusion=results("occlusion/model={model}/shard-{shard}.parquet"),
        atlas=results("atlas/model={model}/shard-{shard}.parquet"),
    log:
        logs("occlude/{model}/shard-{shard}.log"),
    benchmark:
        results("benchmarks/occlude/{model}/shard-{shard}.tsv")
    conda:
        "../envs/leam.yaml"
    threads: lambda wildcards: workflow.cores or 1  # all the cores; a callable, so --unlock needs no --cores
    resources:
        gpu=GPU,  # every configured model re-embeds the occluded frames
        mem_mb=16000,
        runtime=240,
    params:
        options=lambda wildcards: OPTIONS.occlude[wildcards.model],
    script:
        "../scripts/occlude.py"
