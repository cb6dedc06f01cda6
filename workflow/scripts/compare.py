from leam.compare import compare_model
from leam.io import read_parquets
from leam.runlog import log_to

log_to(snakemake.log[0])
compare_model(
    read_parquets(snakemake.input.maps),
    snakemake.output.compare,
    model=snakemake.wildcards.model,
    size=snakemake.params.size,
    selections=snakemake.params.selections,
    grid=snakemake.params.grid,
    different_per_image=snakemake.params.different_per_image,
    seed=snakemake.params.seed,
    full_threshold=snakemake.params.full_threshold,
)
