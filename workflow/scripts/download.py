from pathlib import Path

from leam.core.runlog import log_to
from leam.stages.download import download_list

log_to(snakemake.log[0])
download_list(
    snakemake.input.urls,
    Path(snakemake.output.manifest).parent,
    snakemake.output.table,
    snakemake.output.manifest,
    options=dict(snakemake.params.download),
    seed=snakemake.params.seed,
)
