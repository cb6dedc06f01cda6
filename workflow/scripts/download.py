from pathlib import Path

from leam.download import download_list
from leam.runlog import log_to

log_to(snakemake.log[0])
download_list(
    snakemake.input.urls,
    Path(snakemake.output.manifest).parent,
    snakemake.output.table,
    snakemake.output.manifest,
    options=dict(snakemake.params.download),
    seed=snakemake.params.seed,
)
