from leam.core.runlog import log_to
from leam.outputs.plots import atlas_figure, compare_figure, occlusion_figure, person_figure

log_to(snakemake.log[0])
compare_figure(snakemake.input.db, snakemake.output.compare)
occlusion_figure(snakemake.input.db, snakemake.output.occlusion, snakemake.params.source)
atlas_figure(snakemake.input.db, snakemake.output.atlas)
person_figure(snakemake.input.db, snakemake.output.person)
