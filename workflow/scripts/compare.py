from leam.core.runlog import log_to
from leam.stages.compare import run

log_to(snakemake.log[0])
run(inputs=snakemake.input, outputs=snakemake.output, options=snakemake.params.options)
