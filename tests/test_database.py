"""The run's database is replaced only by a complete build, readers get the build its manifest names,
and a lock held by another process is reported with its PID and the fix (#12 case 10)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from leam.core.io import sha256_file
from leam.outputs.database import DatabaseError, building, connect, export_csv, manifest_path, stale_temporaries


def _build(db: Path, value: int) -> None:
    with building(db) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(?)", [value])


def _value(source) -> int:
    con = connect(source)
    try:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        con.close()


def test_a_build_publishes_the_database_and_its_manifest(tmp_path):
    db = tmp_path / "leam.duckdb"
    _build(db, 7)
    m = json.loads(manifest_path(db).read_text())
    assert m["database"] == "leam.duckdb" and m["tables"] == {"leam_build": 1, "t": 7}
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT build FROM leam_build").fetchone()[0] == m["build"]
    con.close()
    assert _value(manifest_path(db)) == 7 and _value(db) == 7
    assert stale_temporaries(db) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "leam.duckdb",
        "leam.duckdb.json",
    ]


def test_a_failed_build_keeps_the_last_good_database(tmp_path):
    db = tmp_path / "leam.duckdb"
    _build(db, 3)
    before = sha256_file(db)
    with pytest.raises(ZeroDivisionError), building(db) as con:
        con.execute("CREATE TABLE t AS SELECT 42 AS x")
        1 / 0  # noqa: B018 (the error in the middle of a build)
    assert sha256_file(db) == before and _value(db) == 3
    # the manifest is gone, so Snakemake runs aggregate again; nothing else is left behind
    assert not manifest_path(db).exists() and stale_temporaries(db) == []


def test_a_killed_build_keeps_the_last_good_database_and_the_next_build_cleans_up(tmp_path):
    db = tmp_path / "leam.duckdb"
    _build(db, 5)
    before = sha256_file(db)
    script = textwrap.dedent(f"""
        import sys, time
        from leam.outputs.database import building
        with building({str(db)!r}) as con:
            con.execute("CREATE TABLE t AS SELECT range AS x FROM range(100000)")
            print("inside", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "inside"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stdout.close()
    assert sha256_file(db) == before and _value(db) == 5  # still there, still the old one
    left = stale_temporaries(db)
    assert left and all(t.name.startswith(".leam.duckdb.") for t in left)
    assert not manifest_path(db).exists()
    _build(db, 9)
    assert _value(manifest_path(db)) == 9 and stale_temporaries(db) == []


@pytest.fixture
def writer(tmp_path):
    """Another process holding the database open for writing (as `duckdb FILE` does)."""
    db = tmp_path / "leam.duckdb"
    _build(db, 4)
    script = f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('open', flush=True); time.sleep(120)"
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "open"
    yield db, p.pid
    p.kill()
    p.wait()
    p.stdout.close()


def test_a_writer_elsewhere_is_named_with_the_fix(writer):
    db, pid = writer
    with pytest.raises(DatabaseError) as e:
        connect(manifest_path(db))
    msg = str(e.value)
    assert str(db) in msg and f"PID {pid}" in msg and "read-only" in msg and "-readonly" in msg


def test_a_new_build_replaces_a_database_another_process_holds(writer):
    db, _ = writer
    _build(db, 11)  # the writer keeps the old file; new readers see the new one
    assert _value(manifest_path(db)) == 11


def test_a_database_that_is_not_the_manifest_build_is_refused(tmp_path):
    db = tmp_path / "leam.duckdb"
    _build(db, 2)
    other = tmp_path / "other" / "leam.duckdb"
    _build(other, 6)
    os.replace(other, db)  # e.g. a database restored by hand from another run
    with pytest.raises(DatabaseError, match="is not the database aggregate wrote"):
        connect(manifest_path(db))


def test_a_missing_database_is_named(tmp_path):
    db = tmp_path / "leam.duckdb"
    _build(db, 2)
    db.unlink()
    with pytest.raises(DatabaseError, match=r"no such database although .*leam.duckdb.json says aggregate built it"):
        connect(manifest_path(db))
    manifest_path(db).write_text("{not json")
    with pytest.raises(DatabaseError, match="not a leam database manifest"):
        connect(manifest_path(db))


def test_stale_temporaries_match_only_this_database(tmp_path):
    db = tmp_path / "leam.duckdb"
    names = [
        ".leam.duckdb.ab12.tmp",
        ".leam.duckdb.ab12.tmp.wal",
        ".leam.duckdbx.cd.tmp",
        "leam.duckdb.tmp",
        ".other.duckdb.ef.tmp",
    ]
    for n in names:
        (tmp_path / n).write_text("x")
    assert [p.name for p in stale_temporaries(db)] == names[:2]
    _build(db, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["leam.duckdb", "leam.duckdb.json", *names[2:]])


def test_the_duckdb_command_line_reads_the_database(tmp_path):
    """#13: the README's `duckdb -readonly FILE` works: DuckDB's command line is in the environment
    (duckdb-cli, a real DuckDB binary) and the database is written in a format it reads."""
    db = tmp_path / "leam.duckdb"
    _build(db, 3)
    cli = Path(sys.executable).with_name("duckdb")
    assert cli.is_file(), f"{cli}: duckdb-cli is not installed (envs/requirements.lock pins it)"
    out = subprocess.run(
        [str(cli), "-readonly", "-csv", str(db), "-c", "SELECT count(*) AS n FROM t"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", "3"]


def test_export_csv_writes_the_view_in_its_order_to_any_folder(tmp_path):
    db = tmp_path / "leam.duckdb"
    with building(db) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x, 'r' || range AS name FROM range(4)")
        con.execute('CREATE VIEW "odd ""view""" AS SELECT * FROM t ORDER BY x DESC')
    out = tmp_path / "it's here" / "t.csv"  # a quote in the path once broke the COPY statement
    assert export_csv(db, 'odd "view"', out) == 4
    with open(out, newline="") as f:
        assert list(csv.reader(f)) == [["x", "name"], ["3", "r3"], ["2", "r2"], ["1", "r1"], ["0", "r0"]]
    with pytest.raises(DatabaseError, match="no table or view 'nope'"):
        export_csv(db, "nope", tmp_path / "nope.csv")
    assert not (tmp_path / "nope.csv").exists()


def test_export_csv_gives_the_same_bytes_every_time(tmp_path):
    """Float means and standard deviations summed by several DuckDB threads change in their last
    digits from query to query; the exported tables must not (they are the run's results)."""
    db = tmp_path / "leam.duckdb"
    with building(db) as con:
        con.execute("CREATE TABLE t AS SELECT range % 1000 AS g, sin(range * 1.7) * 100 / 3 AS x FROM range(3000000)")
        con.execute("CREATE VIEW v AS SELECT g, avg(x) AS mean, stddev_samp(x) AS sd FROM t GROUP BY g ORDER BY g")
    digests = set()
    for i in range(6):
        out = tmp_path / f"v{i}.csv"
        export_csv(db, "v", out)
        digests.add(sha256_file(out))
    assert len(digests) == 1
