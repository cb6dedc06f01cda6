"""A run killed with SIGKILL at random points and resumed gives byte-identical Parquet and the same
DuckDB results as an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time

import duckdb
import numpy as np
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, snakemake

pytestmark = pytest.mark.pipeline

VIEWS = ["SELECT * FROM threshold_table ORDER BY model, class_id",
         "SELECT * FROM cosine_summary ORDER BY model",
         "SELECT * FROM occlusion_table ORDER BY size_pct",
         "SELECT * FROM compare_table ORDER BY model, selection, layer_idx",
         "SELECT * FROM rejects"]


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "results").rglob("*.parquet"))}


def test_kill_and_resume(sample_raw, pipeline_run, tmp_path):
    ref_dir, cfg = pipeline_run
    d = tmp_path / "run"
    shutil.copytree(ref_dir / "data", d / "data")
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rng = np.random.default_rng(2026)
    kills = []
    for low, high in ((2, 12), (4, 25)):
        wait = float(rng.uniform(low, high))
        proc = subprocess.Popen([SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(d), "--cores", "2",
                                 "--configfile", str(d / "config.yaml")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(wait)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
        proc.wait()
        kills.append((round(wait, 1), f"had ended (rc {proc.returncode})" if finished else "killed"))
        # a killed snakemake leaves its lock: what a user runs before resuming
        assert snakemake(d, "--unlock").returncode == 0
    done = snakemake(d)
    assert done.returncode == 0, done.stderr[-3000:]
    got = _digest(d)
    ref = {k: v for k, v in _digest(ref_dir).items() if k in got}
    print(f"\nSIGKILL after {kills}; {len(got)} Parquet files compared:")
    for name, sha in got.items():
        print(f"  {sha}  {name}")
    assert len(got) == 11 and got == ref
    a = duckdb.connect(str(d / "results/leam.duckdb"), read_only=True)
    b = duckdb.connect(str(ref_dir / "results/leam.duckdb"), read_only=True)
    for sql in VIEWS:
        assert a.execute(sql.replace("*", "* EXCLUDE (path)") if "rejects" in sql else sql).fetchall() == \
            b.execute(sql.replace("*", "* EXCLUDE (path)") if "rejects" in sql else sql).fetchall(), sql
