from leam.counting import count_shard
from leam.io import read_parquet
from leam.runlog import log_to

log_to(snakemake.log[0])
count_shard(
    read_parquet(snakemake.input.maps),
    read_parquet(snakemake.input.labels),
    snakemake.output.counts,
    levels=snakemake.params.levels,
    full_threshold=snakemake.params.full_threshold,
    topk_of=snakemake.params.topk_of,
)
