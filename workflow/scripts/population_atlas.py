from leam.occlude import write_population
from leam.runlog import log_to

log_to(snakemake.log[0])
write_population(snakemake.input.image_maps, snakemake.params.layer, snakemake.params.size, snakemake.output.population)
