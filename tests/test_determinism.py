"""The extract job gives the same bytes on a busy machine: three runs beside four CPU-burning
processes on the two cores, every output's sha256 equal (and equal to an idle run's)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import REPO, write_sub_shard

from leam.stages.extract import OUTPUTS

CHILD = """
import sys
from leam.config import load_config
from leam.options import ExtractOptions
from leam.stages.extract import OUTPUTS, extract_shard
d, model = sys.argv[1], sys.argv[2]
config = load_config(sys.argv[3])
layer = next(iter(config["models"][model]["layers"]))
options = ExtractOptions.from_config(config, model, sources=[(model, layer)])
options = options._replace(device="cpu", selections=("top1",))
out = {k: f"{d}/{k}.parquet" for k in OUTPUTS}
extract_shard(f"{d}/../aligned.parquet", f"{d}/../labels.parquet", out=out, options=options, threads=2)
"""


@pytest.fixture(scope="module")
def shard5(default_aligned, tmp_path_factory):
    """Two identities of five photos: the CPU plan is a chunk of four anchors and a chunk of one."""
    return write_sub_shard(default_aligned, tmp_path_factory.mktemp("determinism"), ("John_Savage", "obama"), 5)


def extract_digest(d, model: str) -> dict[str, str]:
    d.mkdir()
    # the workflow's environment (workflow/rules/common.smk sets GOMP_SPINCOUNT for every job)
    env = {**os.environ, "GOMP_SPINCOUNT": "20000"}
    subprocess.run(
        [sys.executable, "-c", CHILD, str(d), model, str(REPO / "config" / "config.yaml")],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    return {k: hashlib.sha256((d / f"{k}.parquet").read_bytes()).hexdigest() for k in OUTPUTS}


@pytest.mark.parametrize("model", ["dlib_resnet", "mobileface"])
def test_extract_gives_the_same_bytes_under_cpu_contention(shard5, model, default_config):
    idle = extract_digest(shard5 / f"{model}-idle", model)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        busy = [extract_digest(shard5 / f"{model}-busy{i}", model) for i in range(3)]
    finally:
        for b in burners:
            b.kill()
            b.wait()
    for i, got in enumerate(busy):
        assert got == idle, f"run {i} beside 4 CPU burners differs from the idle run: " + ", ".join(
            k for k in OUTPUTS if got[k] != idle[k]
        )
