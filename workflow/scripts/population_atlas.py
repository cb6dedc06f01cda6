from leam.core.runlog import log_to
from leam.stages.occlude import write_population

log_to(snakemake.log[0])
write_population(snakemake.input.image_maps, snakemake.params.layer, snakemake.params.size, snakemake.output.population)
