# leam: LEAM (Layer Embedding Activation Mapping) for face-recognition models, end to end.
# download -> detect -> align -> parse -> extract (+ counts) -> compare, occlude -> aggregate (DuckDB) -> figures
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/parse.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/occlude.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output.manifest,
        rules.report.output.html,
