from leam.core.runlog import log_to
from leam.stages.extract import extract_shard

log_to(snakemake.log[0])
extract_shard(
    snakemake.input.aligned,
    snakemake.input.labels,
    snakemake.wildcards.model,
    dict(snakemake.params.spec),
    out={k: snakemake.output[k] for k in ("pairs", "embeddings", "counts", "image_maps", "rankings", "maps")},
    device=snakemake.params.device,
    memory_budget_mb=snakemake.params.memory_budget_mb,
    threads=snakemake.threads,
    frame_padding=snakemake.params.frame_padding,
    levels=snakemake.params.levels,
    full_threshold=snakemake.params.full_threshold,
    topk_of=snakemake.params.topk_of,
    selections=snakemake.params.selections,
    rank_layer=snakemake.params.rank_layer,
    rank_pixels=snakemake.params.rank_pixels,
    store_maps=snakemake.params.store_maps,
)
