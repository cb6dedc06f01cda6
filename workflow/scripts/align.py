from leam.core.io import read_parquet
from leam.core.runlog import log_to
from leam.stages.align import align_shard

log_to(snakemake.log[0])
align_shard(
    read_parquet(snakemake.input.faces),
    snakemake.output.aligned,
    size=snakemake.params.size,
    padding=snakemake.params.padding,
    seed=snakemake.params.seed,
    max_side=snakemake.params.max_side,
)
