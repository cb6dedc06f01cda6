from leam.core.runlog import log_to
from leam.outputs.plots import demographics_figure

log_to(snakemake.log[0])
demographics_figure(snakemake.input.db, snakemake.output.demographics)
