from leam.report import build_report, report_figures
from leam.runlog import log_to

log_to(snakemake.log[0])
build_report(
    snakemake.input.db,
    snakemake.output.html,
    report_figures(snakemake.params.models, snakemake.input, demographics=snakemake.params.demographics),
    caveats=snakemake.params.caveats,
)
