from leam.extract import extract_shard
from leam.io import read_parquet
from leam.runlog import log_to

log_to(snakemake.log[0])
extract_shard(
    read_parquet(snakemake.input.aligned),
    snakemake.wildcards.model,
    dict(snakemake.params.spec),
    maps_out=snakemake.output.maps,
    pairs_out=snakemake.output.pairs,
    embeddings_out=snakemake.output.embeddings,
    device=snakemake.params.device,
    memory_budget_mb=snakemake.params.memory_budget_mb,
    threads=snakemake.threads,
    frame_padding=snakemake.params.frame_padding,
)
