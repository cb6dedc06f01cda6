"""The embedded default pipeline on a real SLURM cluster: a single-node cluster with slurmdbd
accounting started on this machine (scripts/slurm/start-local-cluster.sh, root, Debian), the jobs
submitted by Snakemake's own executor plugin (snakemake-executor-plugin-slurm) through
profiles/slurm-local. Every job must be in sacct, COMPLETED, and the Parquet outputs must be
byte-identical to the local run of the same photos and config (the session fixture pipeline_run).

Never skipped: if the cluster cannot be started (not root, no apt, a daemon that does not come up),
the test fails with the start script's output.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO, assert_same_results, copy_photos, link_weights, snakemake

pytestmark = pytest.mark.pipeline

START = REPO / "scripts" / "slurm" / "start-local-cluster.sh"
STOP = REPO / "scripts" / "slurm" / "stop-local-cluster.sh"
PROFILE = REPO / "profiles" / "slurm-local"


@pytest.fixture(scope="module")
def cluster():
    """The local SLURM cluster, started (or found running) by the repository's script; stopped again
    at the end when this test started it, so that no daemon outlives the test session."""
    was_up = (
        shutil.which("scontrol") is not None
        and subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("is UP") > 0
    )
    try:
        # a fresh machine installs slurm-wlm, slurmdbd, munge and mariadb-server with apt first (~20 s)
        proc = subprocess.run([str(START)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{START.name} timed out after {e.timeout}s:\n{e.stdout or ''}\n{e.stderr or ''}")
    assert proc.returncode == 0, (
        f"{START.name} could not start the SLURM cluster (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    yield proc.stdout
    if not was_up:
        subprocess.run([str(STOP)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def slurm_run(cluster, pipeline_run, tmp_path_factory):
    """The pipeline_run's photos and config run again, every job submitted to SLURM."""
    ref_dir, cfg = pipeline_run
    d = tmp_path_factory.mktemp("slurm")
    link_weights(d)
    copy_photos(ref_dir / "data", d / "data")  # the sample photos plus the same bad files
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(d, "--profile", str(PROFILE))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return d, out


def test_every_job_ran_on_slurm_and_is_in_sacct(slurm_run):
    d, out = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", out)
    assert run_id, out[-3000:]
    run_id = run_id.group(1)
    # what Snakemake ran: the localrules (the target `all`, the sample copy, the HTML report and the
    # CSV tables, seconds of work) in Snakemake itself, every other job on SLURM ...
    rules = collections.Counter(re.findall(r"^rule (\w+):$", out, re.M))
    local = set(re.findall(r"^localrule (\w+):$", out, re.M))
    submitted = dict(re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", out, re.M))
    assert {"detect", "align", "parse", "extract", "occlude", "aggregate", "figures"} <= set(rules), rules
    assert {"all", "report", "tables"} <= local and not local & set(rules), (local, rules)
    assert len(submitted) == sum(rules.values()), (rules, submitted)
    # ... and what SLURM accounting recorded for this run: the plugin names every job of a run after
    # the run ID and puts the rule (and wildcards) in the job comment
    start = (dt.datetime.now() - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    sacct = subprocess.run(
        [
            "sacct",
            "-X",
            "-P",
            "-n",
            "--name",
            run_id,
            "-S",
            start,
            "-E",
            "now",
            "--format=JobIDRaw,JobName,Comment,State,AllocCPUS,Partition,Account",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sacct.returncode == 0, sacct.stderr
    rows = [line.split("|") for line in sacct.stdout.splitlines() if line.strip()]
    listing = sacct.stdout
    print(f"\nsacct, SLURM run {run_id}:\n{listing}")
    assert {r[0] for r in rows} == set(submitted.values()), listing
    assert all(r[1] == run_id for r in rows), listing
    assert all(r[3] == "COMPLETED" for r in rows), listing
    assert all(r[5] == "debug" and r[6] == "leam" for r in rows), listing
    in_sacct = collections.Counter(re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", r[2]).group(1) for r in rows)
    assert in_sacct == rules, listing
    # set-threads of the profile: extract and occlude get both CPUs of the node
    assert {r[4] for r in rows if r[2].startswith(("rule_extract_", "rule_occlude_"))} == {"2"}, listing
    assert not list((d / ".snakemake" / "slurm_logs").rglob("*.log")), "SLURM logs of failed jobs left"


def test_results_are_identical_to_the_local_run(slurm_run, pipeline_run):
    """Byte-identical Parquet (sha256 printed) and the same rows in the DuckDB views."""
    assert_same_results(slurm_run[0], pipeline_run[0], n_parquet=4 + 9 * 4)  # shards, population, 9 per model
