import torch

from leam.io import read_parquet
from leam.occlude import occlude_stage, read_population
from leam.runlog import log_to

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
occlude_stage(
    read_parquet(snakemake.input.aligned),
    [(model, layer, read_parquet(path)) for (model, layer), path in zip(snakemake.params.sources, snakemake.input.maps)],
    dict(snakemake.params.models),
    occlusion_out=snakemake.output.occlusion,
    atlas_out=snakemake.output.atlas,
    population=read_population(snakemake.input.population),
    sizes=snakemake.params.sizes,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    frame_padding=snakemake.params.frame_padding,
    positives_per_anchor=snakemake.params.positives_per_anchor,
)
