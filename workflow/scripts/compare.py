from leam.core.runlog import log_to
from leam.stages.compare import compare_model

log_to(snakemake.log[0])
compare_model(
    snakemake.input.image_maps,
    snakemake.output.compare,
    model=snakemake.wildcards.model,
    size=snakemake.params.size,
    selections=snakemake.params.selections,
    grid=snakemake.params.grid,
    different_per_image=snakemake.params.different_per_image,
    seed=snakemake.params.seed,
    aligned_paths=snakemake.input.aligned,
)
