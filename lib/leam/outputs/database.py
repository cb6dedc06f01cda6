"""The run's DuckDB database as a published artefact: built beside the last good one, then swapped in.

``results/<run>/leam.duckdb`` is what users query; the aggregate rule's declared output is its
manifest, ``leam.duckdb.json`` (Snakemake deletes a job's declared outputs before the job starts,
so declaring the database itself would leave none while aggregate runs, and none at all if it is
killed). :func:`building` writes a new database into a temporary file in the same folder and
``os.replace``-s it onto the old one only when it is complete; the manifest follows. A killed build
therefore leaves the previous database readable and the manifest absent, so the next run builds
again; the temporaries it left are removed by the next build.

Readers (figures, report) open the database through the manifest (:func:`connect`): the database
must be the build the manifest names (a ``leam_build`` table holds its id), or the reader stops
with a message instead of drawing from another run's tables. A DuckDB file has one writer or many
readers: a user's read-write connection (``duckdb results/...``, or ``duckdb.connect(path)``)
makes readers fail; :func:`connect` says which process holds it and what to do. Swapping a new
file in is not blocked by such a connection: the user keeps the old file open, new readers see the
new one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from leam.core.io import atomic_path, write_text

__all__ = ["DatabaseError", "building", "connect", "export_csv", "manifest_path", "scalar", "stale_temporaries"]

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".json"

#: the database's storage format: the newest that DuckDB's command line on PyPI (duckdb-cli 1.5.6)
#: reads, so ``duckdb -readonly results/<run>/leam.duckdb`` works beside the Python module (2.0.1)
STORAGE_VERSION = "v1.5.0"


class DatabaseError(RuntimeError):
    """The run's database cannot be read: missing, not the manifest's build, or locked."""


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The first value of the first row of ``sql`` (a count, an id); a query with no row is an error."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise DatabaseError(f"no row from: {sql}")
    return row[0]


def manifest_path(db_path: str | os.PathLike) -> Path:
    """``results/<run>/leam.duckdb`` -> ``results/<run>/leam.duckdb.json``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + MANIFEST_SUFFIX)


def stale_temporaries(db_path: str | os.PathLike) -> list[Path]:
    """Temporary files a killed build of ``db_path`` left: ``.leam.duckdb.<random>.tmp`` and its
    ``.tmp.wal``, sorted. Only valid while no build of ``db_path`` runs (Snakemake's lock on the
    output makes that so in the pipeline)."""
    db_path = Path(db_path)
    pattern = re.compile(rf"^\.{re.escape(db_path.name)}\.[^/]+\.tmp(\.wal)?$")
    if not db_path.parent.is_dir():
        return []
    return sorted(p for p in db_path.parent.iterdir() if pattern.match(p.name))


@contextlib.contextmanager
def building(db_path: str | os.PathLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection to a new, empty database that replaces ``db_path`` when the block ends.

    On an exception (or a kill) ``db_path`` and its manifest are left exactly as they were, apart
    from the manifest, which is removed first: it must never name a build that is not on disk.
    Stale temporaries of earlier killed builds are removed before the build starts. On success
    the database gets a one-row ``leam_build`` table (``build`` id, ``written`` UTC time) and the
    manifest (JSON: database file name, build id, time, row count of every table) is written
    after the database is in place.
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for p in stale_temporaries(db_path):
        log.info("removing %s, left by a build that did not finish", p)
        p.unlink(missing_ok=True)
    manifest = manifest_path(db_path)
    manifest.unlink(missing_ok=True)
    build = uuid.uuid4().hex
    written = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    with atomic_path(db_path) as tmp:
        tmp.unlink()  # duckdb creates the file itself
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_VERSION})
        try:
            yield con
            con.execute("CREATE TABLE leam_build AS SELECT ? AS build, ?::TIMESTAMPTZ AS written", [build, written])
            con.execute(
                "COMMENT ON TABLE leam_build IS "
                "'id and time of this build; results/<run>/leam.duckdb.json names the same id'"
            )
            tables = {
                name: scalar(con, f'SELECT count(*) FROM "{name}"')
                for (name,) in con.execute("""SELECT table_name FROM duckdb_tables()
                                                    WHERE NOT internal ORDER BY table_name""").fetchall()
            }
            con.execute("CHECKPOINT")
        finally:
            con.close()
            Path(str(tmp) + ".wal").unlink(missing_ok=True)
    write_text(
        json.dumps({"database": db_path.name, "build": build, "written": written, "tables": tables}, indent=1) + "\n",
        manifest,
    )
    log.info("%s: build %s in place (%d tables); manifest %s", db_path, build, len(tables), manifest)


def connect(path: str | os.PathLike, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open the run's database read-only.

    ``path``: the manifest (``leam.duckdb.json``, what the pipeline's rules get): the database it
    names must exist and be that build; or a database file itself (then nothing is checked but
    that it opens). Raises :class:`DatabaseError` with the file, the reason and the fix.
    ``threads``: DuckDB's worker threads (default: one per core). With more than one, a float
    ``avg``/``stddev_samp`` adds its values in an order that changes from query to query, so the
    last digits do too; ``threads=1`` gives the same bytes every time.
    """
    path = Path(path)
    build = None
    if path.name.endswith(MANIFEST_SUFFIX):
        try:
            manifest = json.loads(path.read_text())
            db_path, build = path.with_name(manifest["database"]), manifest["build"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatabaseError(
                f"{path}: not a leam database manifest ({e}); rerun with "
                "`--forcerun aggregate` to build the database again"
            ) from e
    else:
        db_path = path
    if not db_path.is_file():
        raise DatabaseError(
            f"{db_path}: no such database"
            + (
                f" although {path} says aggregate built it: it was moved or deleted; rerun with `--forcerun aggregate`"
                if build
                else ""
            )
        )
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.IOException as e:
        held = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(e))
        if held:
            raise DatabaseError(
                f"{db_path}: opened for writing by another process ({held.group(1)}, PID {held.group(2)}), "
                "and DuckDB allows one writer or many readers: close that connection (or open the "
                "database read-only: `duckdb -readonly FILE`, `duckdb.connect(FILE, read_only=True)`) "
                "and run again"
            ) from e
        raise DatabaseError(f"{db_path}: cannot be opened: {e}") from e
    if build is not None:
        try:
            found = scalar(con, "SELECT build FROM leam_build")
        except duckdb.Error:
            found = None
        if found != build:
            con.close()
            raise DatabaseError(
                f"{db_path} is not the database aggregate wrote (build {found}, {path} "
                f"says {build}): it was replaced by hand; rerun with `--forcerun aggregate`"
            )
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


def export_csv(source: str | os.PathLike, view: str, out_path: str | os.PathLike) -> int:
    """Write table or view ``view`` of the run's database (``source`` as for :func:`connect`) to
    ``out_path`` as CSV with a header, atomically, in the view's own order; returns the row count.
    Computed on one thread, so the same database gives the same bytes (see :func:`connect`)."""
    con = connect(source, threads=1)
    try:
        known = {
            n
            for (n,) in con.execute(
                "SELECT table_name FROM duckdb_tables() UNION ALL "
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        if view not in known:
            raise DatabaseError(f"{source}: no table or view {view!r}")
        quoted = view.replace('"', '""')
        with atomic_path(out_path) as tmp:
            target = str(tmp).replace("'", "''")  # a folder may be named "it's"
            con.execute(f"COPY (SELECT * FROM \"{quoted}\") TO '{target}' (FORMAT csv, HEADER)")
        n = scalar(con, f'SELECT count(*) FROM "{quoted}"')
    finally:
        con.close()
    log.info("%s: %d rows of %s", out_path, n, view)
    return n
