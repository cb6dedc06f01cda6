from leam.core.io import write_text
from leam.core.runlog import log_to
from leam.models.loader import preflight

log_to(snakemake.log[0])
summary = preflight(
    snakemake.wildcards.model,
    dict(snakemake.params.spec),
    device=snakemake.params.device,
    frame_padding=snakemake.params.frame_padding,
)
write_text(summary + "\n", snakemake.output.ok)
