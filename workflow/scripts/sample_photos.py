from pathlib import Path

from leam.core.runlog import log_to
from leam.stages.dataset import fetch_sample_photos

log_to(snakemake.log[0])
fetch_sample_photos(snakemake.params.sample, Path(snakemake.output.manifest).parent)
