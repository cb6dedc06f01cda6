# Report: one self-contained HTML page with the findings, figures, tables and inputs of the run.


rule report:
    input:
        code=code_stamp("report"),  # the leam modules it runs: an edit reruns it
        db=rules.aggregate.output.manifest,
        layers=expand(rules.figures.output.layers, model=MODELS),
        threshold=expand(rules.figures.output.threshold, model=MODELS),
        compare=rules.study_figures.output.compare,
        occlusion=rules.study_figures.output.occlusion,
        atlas=rules.study_figures.output.atlas,
        person=rules.study_figures.output.person,
        demographics=rules.demographics_figure.output.demographics if HAVE_METADATA else [],
    output:
        html=report(results("report.html"), caption="../report/html.rst", category="leam report"),
    log:
        logs("report/report.log"),
    benchmark:
        results("benchmarks/report/report.tsv")
    conda:
        "../envs/leam.yaml"
    params:
        models=MODELS,
        demographics=HAVE_METADATA,
        caveats=sample_caveats(config["input"]["sample"]),
    script:
        "../scripts/report.py"
