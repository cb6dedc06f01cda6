# Tables: the paper's main tables as CSV from the run's database, for `snakemake --report` and
# spreadsheets (every other view: `duckdb -readonly results/{run}/leam.duckdb`).


rule tables:
    input:
        code=code_stamp("tables"),  # the leam modules it runs: an edit reruns it
        db=rules.aggregate.output.manifest,
    output:
        csv=report(
            results("tables/{table}.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        logs("tables/{table}.log"),
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/leam.yaml"
    script:
        "../scripts/tables.py"
