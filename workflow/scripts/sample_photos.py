from pathlib import Path

from leam.dataset import fetch_sample_photos
from leam.runlog import log_to

log_to(snakemake.log[0])
fetch_sample_photos(snakemake.params.sample, Path(snakemake.output.manifest).parent)
