import torch

from leam.core.runlog import log_to
from leam.stages.occlude import occlude_stage, read_population

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
occlude_stage(
    snakemake.input.aligned,
    [
        (model, layer, path)
        for (model, layer), path in zip(snakemake.params.sources, snakemake.input.rankings, strict=True)
    ],
    dict(snakemake.params.models),
    occlusion_out=snakemake.output.occlusion,
    atlas_out=snakemake.output.atlas,
    own_maps_path=snakemake.input.own_maps[0],
    population=read_population(snakemake.input.population),
    sizes=snakemake.params.sizes,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    frame_padding=snakemake.params.frame_padding,
    positives_per_anchor=snakemake.params.positives_per_anchor,
    atlas_sizes=snakemake.params.atlas_sizes,
)
