from leam.core.runlog import log_to
from leam.outputs.report import build_report, report_figures

log_to(snakemake.log[0])
build_report(
    snakemake.input.db,
    snakemake.output.html,
    report_figures(snakemake.params.models, snakemake.input, demographics=snakemake.params.demographics),
    caveats=snakemake.params.caveats,
)
