from leam.core.runlog import log_to
from leam.outputs.plots import layers_figure, threshold_figure

log_to(snakemake.log[0])
layers_figure(
    snakemake.input.maps,
    snakemake.input.aligned,
    snakemake.output.layers,
    identity=snakemake.params.identity,
    pairs=snakemake.input.pairs,
    cmap=snakemake.params.cmap,
)
threshold_figure(snakemake.input.db, snakemake.wildcards.model, snakemake.output.threshold)
