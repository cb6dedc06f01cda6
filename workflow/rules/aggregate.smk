# Aggregate: every Parquet output into results/{run}/leam.duckdb, with the paper's tables as views.


rule aggregate:
    input:
        code=code_stamp("aggregate"),  # the leam modules it runs: an edit reruns it
        counts=shard_outputs(rules.extract.output.counts, model=MODELS),
        pairs=shard_outputs(rules.extract.output.pairs, model=MODELS),
        embeddings=shard_outputs(rules.extract.output.embeddings, model=MODELS),
        faces=shard_outputs(rules.detect.output.faces),
        aligned=shard_outputs(rules.align.output.aligned),
        labels=shard_outputs(rules.parse.output.labels),  # the centre baseline of the central-face finding
        compare=expand(rules.compare.output.compare, model=MODELS),
        occlusion=shard_outputs(rules.occlude.output.occlusion, model=MODELS),
        atlas=shard_outputs(rules.occlude.output.atlas, model=MODELS),
        metadata=metadata_files(),
        downloads=rules.download.output.table if config["input"]["urls"] else [],
    output:
        # the manifest of results/{run}/leam.duckdb (its build id and tables): Snakemake deletes a job's
        # outputs before it starts, so the database itself is not one; it is replaced only once
        # the new one is complete (leam.outputs.database)
        manifest=results("leam.duckdb.json"),
    log:
        logs("aggregate/aggregate.log"),
    benchmark:
        results("benchmarks/aggregate/aggregate.tsv")
    conda:
        "../envs/leam.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        options=OPTIONS.aggregate,
    script:
        "../scripts/aggregate.py"
