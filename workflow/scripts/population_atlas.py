from leam.io import read_parquet
from leam.occlude import write_population
from leam.runlog import log_to

log_to(snakemake.log[0])
write_population([read_parquet(p) for p in snakemake.input.maps], snakemake.params.layer, snakemake.params.size,
                 snakemake.output.population)
