from leam.core.runlog import log_to
from leam.stages.dataset import entries_from_paths
from leam.stages.detect import detect_shard

log_to(snakemake.log[0])
detect_shard(
    entries_from_paths(snakemake.input.images),
    snakemake.output.faces,
    upsample=snakemake.params.upsample,
    min_score=snakemake.params.min_score,
    near_duplicate_mad=snakemake.params.near_duplicate_mad,
    max_side=snakemake.params.max_side,
    unusable=snakemake.params.unusable,
)
