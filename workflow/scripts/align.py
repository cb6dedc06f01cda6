from leam.align import align_shard
from leam.io import read_parquet
from leam.runlog import log_to

log_to(snakemake.log[0])
align_shard(
    read_parquet(snakemake.input.faces),
    snakemake.output.aligned,
    size=snakemake.params.size,
    padding=snakemake.params.padding,
    seed=snakemake.params.seed,
    max_side=snakemake.params.max_side,
)
