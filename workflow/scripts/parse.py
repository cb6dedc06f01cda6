from leam.core.runlog import log_to
from leam.stages.parse import parse_shard

log_to(snakemake.log[0])
parse_shard(
    snakemake.input.aligned,  # streamed: a batch of frames in memory at a time
    snakemake.output.labels,
    parser=dict(snakemake.params.parser),
    device=snakemake.params.device,
)
