"""What a run finds in its results folder before it plans: damaged outputs, temporaries of killed
jobs, and outputs of models or shards that are no longer part of the run.

The workflow (``workflow/rules/common.smk``) calls these when it starts:

- :func:`damaged_outputs`: Parquet files whose footer is missing or does not fit the file
  (:func:`leam.core.io.check_parquet`). A killed writer never leaves a file under its final name
  (``leam.core.io.atomic_path``), so such a file was damaged afterwards (a full disk, a copy cut short);
  it is removed, with a warning naming it, and Snakemake redoes the job that wrote it.
- :func:`killed_temporaries`: the ``.<name>.<random>.tmp`` files of ``atomic_path`` left by a job
  that was killed; removed once the run holds Snakemake's lock (``onstart``), never while another
  run could still be writing them.
- :func:`unplanned_outputs`: files of a model no longer in the config, or of shards beyond the
  run's shard count: kept (they may be wanted back), named in a warning, and listed in the
  database (table ``unplanned_outputs``) and the report, so nothing stale sits unmarked beside the
  run's results; the database and every figure use only the run's own files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from leam.core.io import CODE_KEY, check_parquet

__all__ = ["content_digests", "damaged_outputs", "killed_temporaries", "unplanned_outputs"]

_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile.mkstemp(prefix=".name.", suffix=".tmp")
_SHARD = re.compile(r"^shard-(\d+)\.")
_MODEL_DIR = re.compile(r"^model=(.+)$")


def _files(results_dir: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(results_dir):
        dirs.sort()
        for f in sorted(files):
            yield Path(root) / f


def damaged_outputs(results_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """[(path, why)] of the Parquet files under ``results_dir`` that cannot be read back."""
    out = []
    for p in _files(Path(results_dir)):
        if p.suffix == ".parquet" and not p.name.startswith(".") and (why := check_parquet(p)) is not None:
            out.append((p, why))
    return out


def killed_temporaries(results_dir: str | os.PathLike) -> list[Path]:
    """The temporary files of :func:`leam.core.io.atomic_path` under ``results_dir`` (left by killed jobs)."""
    return [p for p in _files(Path(results_dir)) if _TEMPORARY.match(p.name)]


def unplanned_outputs(results_dir: str | os.PathLike, models: Iterable[str], n_shards: int) -> list[Path]:
    """Files under ``results_dir`` that this run does not write: inside a ``model=M`` folder of a
    model not in ``models``, a ``preflight/M.txt`` or ``figures/M_*`` of one, or a
    ``shard-NNN.*`` with NNN >= ``n_shards``."""
    results_dir, models = Path(results_dir), set(models)
    out = []
    for p in _files(results_dir):
        rel = p.relative_to(results_dir).parts
        dirs = [m.group(1) for part in rel[:-1] if (m := _MODEL_DIR.match(part))]
        shard = _SHARD.match(p.name)
        if (
            any(m not in models for m in dirs)
            or (rel[0] == "preflight" and p.suffix == ".txt" and p.stem not in models)
            or (shard and int(shard.group(1)) >= n_shards)
        ):
            out.append(p)
        elif rel[0] == "figures" and len(rel) == 2 and "_" in p.stem:
            per_model = ("_layers", "_share_vs_threshold")
            owner = next((p.stem.removesuffix(s) for s in per_model if p.stem.endswith(s)), None)
            if owner is not None and owner not in models:
                out.append(p)
    return out


def content_digests(results_dir: str | os.PathLike) -> dict[str, str]:
    """{path relative to ``results_dir``: sha256} of every Parquet file and CSV table of a run, to
    compare two runs' results (e.g. before and after a change of code that should change no number).

    A CSV table's digest is its file's. A Parquet file's is over its content, read back: the Arrow
    IPC stream of its table with the ``leam.code_version`` metadata set aside (every other schema
    metadata kept), since that key differs between code versions by design while the numbers must
    not, and its row groups joined (how a writer batches rows is not content). Two runs whose
    digests agree hold the same rows in the same order, columns, types and values.
    """
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    results_dir = Path(results_dir)
    out = {}
    for p in _files(results_dir):
        if p.name.startswith("."):
            continue
        if p.suffix == ".csv":
            out[p.relative_to(results_dir).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.suffix == ".parquet":
            table = pq.read_table(p)
            meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != CODE_KEY}
            table = table.replace_schema_metadata(meta or None).combine_chunks()  # row groups set aside too
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            out[p.relative_to(results_dir).as_posix()] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return out
