"""Content stamps: reruns follow what files hold, not their timestamps.

Snakemake reruns a job when an input is newer than its outputs. A photo replaced by a copy that keeps
an older timestamp (``cp -p``, a backup restore) is never newer, so the old photo's results stayed.
A stamp is a small JSON file naming a group of inputs (a shard's photos, a model's weight file) with
the sha256 of each; the rule that reads the group takes the stamp as an input too. :func:`update_stamp`
rewrites the stamp (atomically) only when a sha256 or the list of files changed, so Snakemake sees a
newer stamp exactly when the content changed, and nothing reruns when only a timestamp or a
permission changed.

The sha256 of a file whose (size, mtime, ctime, inode) are those recorded is taken from the stamp
instead of being read again: ``cp -p`` keeps the mtime but not the ctime or the inode, so a
replaced file is always read. Cost: one ``stat`` per file per Snakemake invocation, and reading only
the files that changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from leam.core.io import sha256_file, write_text

__all__ = ["update_stamp"]


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def update_stamp(stamp: str | os.PathLike, files: Mapping[str, str | os.PathLike]) -> bool:
    """Record ``files`` ({name: path}) with their sha256 in ``stamp``; returns True when the stamp
    was (re)written, i.e. when a file's content, a name or the set of files changed. A file that
    vanished is left out (the rule that reads it will say so)."""
    stamp = Path(stamp)
    try:
        old = json.loads(stamp.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        old = {}
    new: dict[str, dict] = {}
    for name, path in sorted(files.items()):
        try:
            st = os.stat(path)
        except OSError:
            continue
        prev = old.get(name)
        digest = prev["sha256"] if prev and prev.get("stat") == _key(st) else sha256_file(path)
        new[name] = {"sha256": digest, "stat": _key(st)}
    text = json.dumps({"files": new}, indent=1, sort_keys=True) + "\n"
    same = {k: v["sha256"] for k, v in new.items()} == {k: v.get("sha256") for k, v in old.items()}
    if same and stamp.is_file():
        if new != old:  # only the stat cache changed (a chmod, a touch): keep the stamp's time
            before = stamp.stat()
            write_text(text, stamp)
            os.utime(stamp, ns=(before.st_atime_ns, before.st_mtime_ns))
        return False
    stamp.parent.mkdir(parents=True, exist_ok=True)
    write_text(text, stamp)
    return True
