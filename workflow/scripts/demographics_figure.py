from leam.plots import demographics_figure
from leam.runlog import log_to

log_to(snakemake.log[0])
demographics_figure(snakemake.input.db, snakemake.output.demographics)
