"""Atomic, deterministic file output: Parquet (zstd), PNG, text.

Every writer goes through :func:`atomic_path`: data is written to a temporary file in the target
directory and moved into place with ``os.replace``, so a killed job leaves either no file or the
complete file. Parquet is written without timestamps, so the same table gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["atomic_path", "write_parquet", "read_parquet", "read_parquets", "write_text", "sha256_file", "sha256_bytes"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, path: str | os.PathLike, *, row_group_size: int = 65536) -> None:
    """Write ``table`` atomically as zstd Parquet; same table, same bytes."""
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            compression_level=3,
            row_group_size=row_group_size,
            write_statistics=True,
            store_schema=True,
        )


def read_parquet(path: str | os.PathLike) -> pa.Table:
    """Read one Parquet file (no hive discovery: partition columns are stored in the file)."""
    return pq.read_table(path, partitioning=None)


def read_parquets(paths) -> pa.Table:
    """Concatenate several Parquet files of one schema, in the order given."""
    tables = [read_parquet(p) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
