# Figures, each as a 300-dpi PNG and a vector PDF, all in `snakemake --report` with captions
# (workflow/report/*.rst): layer-by-layer maps over one face (paper Fig. 4), class share vs threshold,
# map comparisons, occlusion, the identity atlas, demographics.


rule figures:
    input:
        code=code_stamp("figures"),  # the leam modules it runs: an edit reruns it
        db=rules.aggregate.output.manifest,
        maps=shard_outputs(rules.extract.output.maps, model="{model}"),
        pairs=shard_outputs(rules.extract.output.pairs, model="{model}"),
        aligned=shard_outputs(rules.align.output.aligned),
    output:
        layers=figure("{model}_layers.png", "layers", "{model}"),
        layers_pdf=figure("{model}_layers.pdf", "layers", "{model}"),
        threshold=figure("{model}_share_vs_threshold.png", "threshold", "{model}"),
        threshold_pdf=figure("{model}_share_vs_threshold.pdf", "threshold", "{model}"),
    log:
        logs("figures/{model}.log"),
    benchmark:
        results("benchmarks/figures/{model}.tsv")
    conda:
        "../envs/leam.yaml"
    params:
        identity=config["figures"]["example_identity"],
        cmap=config["figures"]["cmap"],
    script:
        "../scripts/figures.py"


rule study_figures:
    input:
        code=code_stamp("study_figures"),  # the leam modules it runs: an edit reruns it
        db=rules.aggregate.output.manifest,
    output:
        compare=figure("compare.png", "compare", "all models"),
        compare_pdf=figure("compare.pdf", "compare", "all models"),
        occlusion=figure("occlusion.png", "occlusion", "all models"),
        occlusion_pdf=figure("occlusion.pdf", "occlusion", "all models"),
        atlas=figure("atlas.png", "atlas", "all models"),
        atlas_pdf=figure("atlas.pdf", "atlas", "all models"),
        person=figure("person.png", "person", "all models"),
        person_pdf=figure("person.pdf", "person", "all models"),
    log:
        logs("figures/study.log"),
    benchmark:
        results("benchmarks/figures/study.tsv")
    conda:
        "../envs/leam.yaml"
    params:
        source=OCCLUDE_SOURCE,
    script:
        "../scripts/study_figures.py"


rule demographics_figure:
    input:
        code=code_stamp("demographics_figure"),  # the leam modules it runs: an edit reruns it
        db=rules.aggregate.output.manifest,
    output:
        demographics=figure("demographics.png", "demographics", "all models"),
        demographics_pdf=figure("demographics.pdf", "demographics", "all models"),
    log:
        logs("figures/demographics.log"),
    benchmark:
        results("benchmarks/figures/demographics.tsv")
    conda:
        "../envs/leam.yaml"
    script:
        "../scripts/demographics_figure.py"
