from leam.io import write_text
from leam.models import preflight
from leam.runlog import log_to

log_to(snakemake.log[0])
summary = preflight(
    snakemake.wildcards.model,
    dict(snakemake.params.spec),
    device=snakemake.params.device,
    frame_padding=snakemake.params.frame_padding,
)
write_text(summary + "\n", snakemake.output.ok)
