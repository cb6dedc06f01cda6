# Occlude: LEAM-guided vs random black-pixel occlusion, transferred to every model (Table 9, Fig. 8),
# and the identity atlas (own / identity / population / random pixels).


rule population_atlas:
    input:
        maps=shard_outputs(rules.extract.output.maps, model=OCCLUDE_SOURCE),
    output:
        population="results/occlusion/population.parquet",
    params:
        layer=OCCLUDE_LAYER,
        size=config["align"]["size"],
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/occlude/population.log",
    script:
        "../scripts/population_atlas.py"


rule occlude:
    input:
        aligned=rules.align.output.aligned,
        maps=expand(rules.extract.output.maps, model=OCCLUDE_SOURCE, allow_missing=True),
        population=rules.population_atlas.output.population,
    output:
        occlusion="results/occlusion/shard-{shard}.parquet",
        atlas="results/atlas/shard-{shard}.parquet",
    params:
        models={m: config["models"][m] for m in MODELS},
        source_model=OCCLUDE_SOURCE,
        source_layer=OCCLUDE_LAYER,
        sizes=config["occlude"]["sizes"],
        seed=config["seed"],
        device=config["extract"]["device"],
    threads: workflow.cores
    resources:
        gpu=1,  # every configured model re-embeds the occluded frames
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/occlude/shard-{shard}.log",
    benchmark:
        "results/benchmarks/occlude/shard-{shard}.tsv"
    script:
        "../scripts/occlude.py"
