from leam.io import read_parquets
from leam.plots import layers_figure, threshold_figure
from leam.runlog import log_to

log_to(snakemake.log[0])
layers_figure(
    read_parquets(snakemake.input.maps),
    read_parquets(snakemake.input.aligned),
    snakemake.output.layers,
    identity=snakemake.params.identity,
)
threshold_figure(snakemake.input.db, snakemake.wildcards.model, snakemake.output.threshold)
