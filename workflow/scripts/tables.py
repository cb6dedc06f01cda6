from leam.core.runlog import log_to
from leam.outputs.database import export_csv

log_to(snakemake.log[0])
export_csv(snakemake.input.db, snakemake.wildcards.table, snakemake.output.csv)
