# Configuration validation and input functions, included first by the Snakefile.
from pathlib import Path

from leam.config import validate_config
from leam.dataset import MANIFEST_NAME, list_images, shard_of

validate_config(config, source="config (config.yaml and --config overrides)")

RAW = config["input"]["dir"]
SHARDS = [f"{s:03d}" for s in range(config["shards"])]
MODELS = list(config["models"])


def sample_manifest():
    """The sample-photo manifest when a sample set is configured (a checkpoint), else nothing."""
    if config["input"]["sample"]:
        return checkpoints.sample_photos.get().output.manifest
    return []


def shard_images(wildcards):
    """Every file of the shard's identities under input.dir (known after the sample checkpoint)."""
    sample_manifest()
    n = config["shards"]
    return [e.path for e in list_images(RAW) if shard_of(e.identity, n) == int(wildcards.shard)]


def shard_outputs(pattern, **kw):
    return expand(pattern, shard=SHARDS, **kw)
