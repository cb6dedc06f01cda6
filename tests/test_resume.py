"""A run killed with SIGKILL at random points and resumed gives byte-identical Parquet and the same
DuckDB results as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from conftest import (
    assert_same_results,
    assert_same_views,
    copy_photos,
    kill_snakemake_when,
    link_weights,
    snakemake,
    snakemake_cmd,
)

from leam.core.io import sha256_file
from leam.outputs.database import connect, manifest_path, stale_temporaries

pytestmark = pytest.mark.pipeline


def test_kill_and_resume(sample_raw, pipeline_run, tmp_path):
    ref_dir, cfg = pipeline_run
    d = tmp_path / "run"
    link_weights(d)
    copy_photos(ref_dir / "data", d / "data")
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rng = np.random.default_rng(2026)
    kills = []
    for low, high in ((2, 12), (4, 25)):
        wait = float(rng.uniform(low, high))
        proc = subprocess.Popen(
            snakemake_cmd(d),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(wait)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
        proc.wait()
        kills.append((round(wait, 1), f"had ended (rc {proc.returncode})" if finished else "killed"))
        # a killed snakemake leaves its lock: what a user runs before resuming, as the README says it
        # (no --cores: #12 case 11, extract's threads used to need it)
        unlock = snakemake(d, "--unlock", cores=None)
        assert unlock.returncode == 0, unlock.stderr[-2000:]
    done = snakemake(d)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\nSIGKILL after {kills}")
    assert_same_results(d, ref_dir, n_parquet=4 + 9 * 4)  # shards, population, 9 per model


def test_a_killed_aggregate_keeps_the_last_database(pipeline_run, tmp_path):
    """#12 case 10: Snakemake deletes a job's outputs before it starts; the database is therefore not
    aggregate's declared output (its manifest is), and is replaced only by a complete build."""
    ref_dir, cfg = pipeline_run
    d = tmp_path / "run"
    link_weights(d)
    copy_photos(ref_dir / "data", d / "data")
    shutil.copytree(ref_dir / "results", d / "results")
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    db = d / "results" / "default" / "leam.duckdb"
    before = sha256_file(db)
    kill_snakemake_when(
        d, ["--forcerun", "aggregate", "--until", "aggregate"], lambda: stale_temporaries(db), "aggregate"
    )
    # the last good database is still there, readable, byte for byte; the manifest is gone
    assert sha256_file(db) == before and not manifest_path(db).exists()
    assert stale_temporaries(db), "the kill came after the build's temporary file was gone"
    con = connect(db)
    assert con.execute("SELECT count(*) FROM counts").fetchone()[0] > 0
    con.close()
    assert snakemake(d, "--unlock", cores=None).returncode == 0
    done = snakemake(d)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stale_temporaries(db) == [] and manifest_path(db).exists()
    assert (d / "results" / "default" / "report.html").stat().st_size > 0
    assert_same_views(d, ref_dir)
