"""Logging for pipeline steps: every line to the rule's log file and to stderr; errors too; and,
when the step ends, its peak memory (the kernel's high-water mark of the process, not a sample:
Snakemake's benchmark files sample RSS every 30 s after a job's first 30 s; :func:`peak_rss_mb`)."""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys

__all__ = ["log_to", "peak_rss_mb", "PEAK_RSS_PREFIX"]

#: the line each step's log ends with (benchmarks/scale.py reads it)
PEAK_RSS_PREFIX = "peak RSS of this step: "


def log_to(path: str | os.PathLike, level: int = logging.INFO) -> logging.Logger:
    """Send logging (and uncaught exceptions) to ``path`` and stderr; returns the root logger."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in (logging.FileHandler(path, mode="w", encoding="utf-8"), logging.StreamHandler(sys.stderr)):
        h.setFormatter(fmt)
        root.addHandler(h)
    logging.captureWarnings(True)

    def hook(exc_type, exc, tb):
        root.error("failed: %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = hook
    atexit.register(lambda: root.info("%s%.1f MB", PEAK_RSS_PREFIX, peak_rss_mb()))
    return root


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: ``VmHWM`` of /proc/self/status (the high-water mark
    of its own address space). ``ru_maxrss`` is not used where VmHWM exists: Linux carries the
    parent's RSS at fork into it, so every job of a big Snakemake process would seem that big."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
