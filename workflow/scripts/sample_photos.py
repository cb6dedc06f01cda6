from leam.core.runlog import log_to
from leam.stages.dataset import run_sample

log_to(snakemake.log[0])
run_sample(outputs=snakemake.output, options=snakemake.params.options)
