from leam.core.runlog import log_to
from leam.stages.aggregate import build_database

log_to(snakemake.log[0])
build_database(
    snakemake.params.db,
    counts=snakemake.input.counts,
    pairs=snakemake.input.pairs,
    embeddings=snakemake.input.embeddings,
    faces=snakemake.input.faces,
    aligned=snakemake.input.aligned,
    compare=snakemake.input.compare,
    occlusion=snakemake.input.occlusion,
    atlas=snakemake.input.atlas,
    downloads=snakemake.input.downloads,
    metadata=dict(snakemake.params.metadata),
    models=dict(snakemake.params.models),
    levels=snakemake.params.levels,
    memory_mb=snakemake.params.duckdb_memory_mb,
    threads=snakemake.threads,
    labels=snakemake.input.labels,
    size=snakemake.params.size,
    seed=snakemake.params.seed,
    settings=dict(snakemake.params.settings),
    unplanned=list(snakemake.params.unplanned),
)
