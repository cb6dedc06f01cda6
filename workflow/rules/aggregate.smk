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
        db=lambda wildcards, output: output.manifest.removesuffix(".json"),
        models={m: config["models"][m] for m in MODELS},
        levels=config["count"]["levels"],
        size=config["align"]["size"],
        seed=config["seed"],  # the findings' bootstrap and permutations
        unplanned=UNPLANNED,  # files of models or shards no longer in the run: listed, not read
        settings={  # what the report states beside the numbers
            "compare.emd_grid": config["compare"]["emd_grid"],
            "compare.selections": ", ".join(config["compare"]["selections"]),
            "count.topk_of": config["count"]["topk_of"],
            "count.full_threshold": config["count"]["full_threshold"],
            "occlude.positives_per_anchor": config["occlude"]["positives_per_anchor"],
        },
        metadata=config["metadata"],
        # DuckDB's buffer pool: table blocks go to the database file, so memory stays flat with the
        # study's size (benchmarks/scale.py); more only speeds up very large joins
        duckdb_memory_mb=128,
    script:
        "../scripts/aggregate.py"
