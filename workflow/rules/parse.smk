# Parse: FaRL-class label maps of the aligned frames.


rule parse:
    input:
        aligned=rules.align.output.aligned,
    output:
        labels="results/labels/shard-{shard}.parquet",
    params:
        parser=config["parser"],
        device=config["extract"]["device"].replace("auto", "cpu"),
    conda:
        "../../envs/leam.yaml"
    log:
        "logs/parse/shard-{shard}.log",
    script:
        "../scripts/parse.py"
