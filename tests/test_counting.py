"""Per-class counting at the paper's selections against a per-map numpy loop."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from leam.core.classes import N_CLASSES
from leam.core.counting import count_classes, selection_sizes
from leam.core.paper import LEVELS
from leam.core.selection import selection_names


def naive_counts(v: np.ndarray, lab: np.ndarray, levels, thr: float, topk_of: str):
    """One map: (N,) values, (N,) labels -> (1 + L, C) counts, with exact rational rounding."""
    active = v >= thr
    order = np.argsort(-v, kind="stable")  # descending, ties by index
    base = int(active.sum()) if topk_of == "active" else len(v)
    rows = [np.bincount(lab[active], minlength=N_CLASSES)]
    for level in levels:
        k = math.ceil(Fraction(str(level)) * base / 100)
        rows.append(np.bincount(lab[order[:k]], minlength=N_CLASSES))
    return np.stack(rows)


@pytest.mark.parametrize("topk_of", ["active", "all"])
def test_counts_equal_naive_loop(topk_of):
    rng = np.random.default_rng(0)
    p, s = 12, 37
    # quantised values: many ties, many exact zeros, some exactly at the threshold
    v = np.round(rng.random((p, s * s)) ** 3 * 50) / 50
    v[:, :20] = 0.01
    v[3] = 0.0  # a map with nothing active
    lab = rng.integers(0, N_CLASSES, (p, s * s))
    counts, sizes = count_classes(
        torch.from_numpy(v).reshape(p, s, s),
        torch.from_numpy(lab).reshape(p, s, s),
        levels=LEVELS,
        full_threshold=0.01,
        topk_of=topk_of,
    )
    assert counts.shape == (p, 16, N_CLASSES)
    for i in range(p):
        ref = naive_counts(v[i], lab[i], LEVELS, 0.01, topk_of)
        np.testing.assert_array_equal(counts[i].numpy(), ref, err_msg=f"map {i}")
        np.testing.assert_array_equal(sizes[i].numpy(), ref.sum(1))
    if topk_of == "active":
        np.testing.assert_array_equal(counts[:, -1], counts[:, 0])  # top100 == full
        assert counts[3].sum() == 0


def test_selection_sizes_round_up_exactly():
    n = torch.tensor([22500, 1, 0, 9999])
    got = selection_sizes(n, 22500, [0.01, 1, 100], "active")
    # ceil(0.01% of 22500) = ceil(2.25) = 3; ceil(1% of 1) = 1; nothing active -> 0
    assert got.tolist() == [[22500, 3, 225, 22500], [1, 1, 1, 1], [0, 0, 0, 0], [9999, 1, 100, 9999]]
    with pytest.raises(ValueError, match="multiple of 0.01"):
        selection_sizes(n, 100, [0.005], "active")


def test_selections_are_nested_and_named():
    rng = np.random.default_rng(1)
    v = torch.from_numpy(rng.random((3, 20, 20)))
    lab = torch.from_numpy(rng.integers(0, N_CLASSES, (3, 20, 20)))
    counts, sizes = count_classes(v, lab, levels=LEVELS, full_threshold=0.01, topk_of="active")
    assert selection_names(LEVELS)[:3] == ["full", "top0.01", "top0.05"] and len(selection_names(LEVELS)) == 16
    # each larger level selects a superset: class counts never decrease
    assert bool((counts[:, 2:] >= counts[:, 1:-1]).all())
    assert bool((sizes[:, 1:].diff(dim=1) >= 0).all())


def test_a_hand_made_map():
    # 2x2 map: values 1.0 (nose), 0.5 (eye), 0.005 (face, below threshold), 0.5 (face, tie)
    v = torch.tensor([[[1.0, 0.5], [0.005, 0.5]]])
    lab = torch.tensor([[[10, 8], [2, 2]]])
    counts, sizes = count_classes(v, lab, levels=[50, 100], full_threshold=0.01, topk_of="active")
    assert sizes.tolist() == [[3, 2, 3]]  # 3 active; ceil(1.5) = 2; all 3
    assert counts[0, 0, [10, 8, 2]].tolist() == [1, 1, 1]
    # top 50 %: the 1.0 and the first 0.5 by index (the eye pixel, index 1 before index 3)
    assert counts[0, 1, [10, 8, 2]].tolist() == [1, 1, 0]
