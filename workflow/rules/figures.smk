# Figures: layer-by-layer maps over one face (paper Fig. 4) and class share vs threshold.


rule figures:
    input:
        db=rules.aggregate.output.manifest,
        maps=shard_outputs(rules.extract.output.maps, model="{model}"),
        pairs=shard_outputs(rules.extract.output.pairs, model="{model}"),
        aligned=shard_outputs(rules.align.output.aligned),
    output:
        layers=results("figures/{model}_layers.png"),
        threshold=results("figures/{model}_share_vs_threshold.png"),
    params:
        identity=config["figures"]["example_identity"],
    conda:
        "../envs/leam.yaml"
    log:
        logs("figures/{model}.log"),
    benchmark:
        results("benchmarks/figures/{model}.tsv")
    script:
        "../scripts/figures.py"


rule study_figures:
    input:
        db=rules.aggregate.output.manifest,
    output:
        compare=results("figures/compare.png"),
        occlusion=results("figures/occlusion.png"),
        atlas=results("figures/atlas.png"),
    params:
        source=OCCLUDE_SOURCE,
    conda:
        "../envs/leam.yaml"
    log:
        logs("figures/study.log"),
    benchmark:
        results("benchmarks/figures/study.tsv")
    script:
        "../scripts/study_figures.py"


rule demographics_figure:
    input:
        db=rules.aggregate.output.manifest,
    output:
        demographics=results("figures/demographics.png"),
    conda:
        "../envs/leam.yaml"
    log:
        logs("figures/demographics.log"),
    benchmark:
        results("benchmarks/figures/demographics.tsv")
    script:
        "../scripts/demographics_figure.py"
