"""Which pixels of a map a relevance selection keeps: ``full`` (every pixel at or above the full
threshold, 0.01 of the map's maximum, the paper's "activated" pixels) or ``top{k}`` (the ceil(k %)
highest of them, ties by pixel index), and how many pixels an occlusion size covers.

This module holds the names and sizes, torch-free (the workflow's plan sizes the occlusion
rankings with :func:`n_occluded`); :func:`leam.core.counting.selection_sizes` and
:func:`leam.core.counting.select` apply them to maps. Counting, the map comparisons (compare
stage), the per-identity summaries and occlusion all choose pixels through these, so a selection
means the same pixels everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["selection_names", "hundredths", "n_occluded"]


def n_occluded(size_pct: float, n_pixels: int) -> int:
    """Pixels occluded at ``size_pct`` % of ``n_pixels``: rounded up, at least 1 (exact rationals)."""
    q = round(size_pct * 100)
    return max(1, -(-n_pixels * q // 10000))


def selection_names(levels: Sequence[float]) -> list[str]:
    """``["full", "top0.01", ..., "top100"]``."""
    return ["full"] + [f"top{level:g}" for level in levels]


def hundredths(level: float) -> int:
    """A relevance level in % as an exact count of 1/100 % (``0.05`` -> 5); levels are multiples of 0.01 %."""
    q = round(level * 100)
    if not math.isclose(q, level * 100, abs_tol=1e-6):
        raise ValueError(f"level {level} % is not a multiple of 0.01 %")
    return q
