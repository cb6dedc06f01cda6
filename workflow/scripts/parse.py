from leam.io import read_parquet
from leam.parsing import parse_shard
from leam.runlog import log_to

log_to(snakemake.log[0])
parse_shard(
    read_parquet(snakemake.input.aligned),
    snakemake.output.labels,
    parser=dict(snakemake.params.parser),
    device=snakemake.params.device,
)
