from leam.database import export_csv
from leam.runlog import log_to

log_to(snakemake.log[0])
export_csv(snakemake.input.db, snakemake.wildcards.table, snakemake.output.csv)
