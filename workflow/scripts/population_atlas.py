from leam.core.runlog import log_to
from leam.stages.occlude import run_population

log_to(snakemake.log[0])
run_population(inputs=snakemake.input, outputs=snakemake.output, options=snakemake.params.options)
