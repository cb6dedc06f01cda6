"""Bhattacharyya coefficient and EMD: closed forms, POT as the oracle, the fast path's error."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from leam.core.similarity import (
    bhattacharyya,
    coarsen,
    emd_exact,
    emd_sinkhorn,
    emd_sparse,
    ground_cost,
    to_distribution,
)


def _delta(g: int, i: int, j: int) -> np.ndarray:
    d = np.zeros((g, g))
    d[i, j] = 1.0
    return d


def test_identical_maps():
    rng = np.random.default_rng(0)
    p = to_distribution(torch.from_numpy(rng.random((1, 16, 16))))
    assert float(bhattacharyya(p, p)[0]) == pytest.approx(1.0, abs=1e-12)
    assert emd_exact(p[0].numpy(), p[0].numpy(), frame=16) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_supports_have_bc_zero():
    p = torch.zeros(1, 8, 8)
    q = torch.zeros(1, 8, 8)
    p[0, :4] = 1
    q[0, 4:] = 1
    assert float(bhattacharyya(to_distribution(p), to_distribution(q))[0]) == 0.0


@pytest.mark.parametrize("di, dj", [(0, 3), (4, 0), (3, 4), (7, 7)])
def test_a_delta_moved_by_d_costs_d(di, dj):
    g, frame = 16, 150  # cell = 150 / 16 frame pixels
    cost = emd_exact(_delta(g, 2, 5), _delta(g, 2 + di, 5 + dj), frame=frame)
    assert cost == pytest.approx(np.hypot(di, dj) * frame / g, rel=1e-12)


def test_bc_closed_form_on_random_maps():
    rng = np.random.default_rng(1)
    p, q = rng.random((2, 5, 9, 9))
    p /= p.sum((1, 2), keepdims=True)
    q /= q.sum((1, 2), keepdims=True)
    got = bhattacharyya(torch.from_numpy(p), torch.from_numpy(q)).numpy()
    np.testing.assert_allclose(got, np.sqrt(p * q).sum((1, 2)), rtol=1e-12)


def test_emd_equals_pot_with_its_own_cost_matrix():
    rng = np.random.default_rng(2)
    g, frame = 12, 120
    centres = (np.arange(g) + 0.5) * frame / g
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    m = ot.dist(np.stack([xx.ravel(), yy.ravel()], 1), metric="euclidean")
    np.testing.assert_allclose(ground_cost(g, frame), m, rtol=1e-12)
    for _ in range(4):
        p, q = rng.random((2, g, g)) ** 4
        p, q = p / p.sum(), q / q.sum()
        assert emd_exact(p, q, frame) == pytest.approx(ot.emd2(p.ravel(), q.ravel(), m), rel=1e-9)


def test_coarsen_preserves_mass_and_position():
    d = torch.zeros(1, 64, 64)
    d[0, 40:44, 8:12] = 1
    c = coarsen(to_distribution(d), 16)
    assert float(c.sum()) == pytest.approx(1.0)
    assert torch.nonzero(c[0]).tolist() == [[10, 2]]


def test_sinkhorn_is_close_to_exact():
    rng = np.random.default_rng(3)
    g, frame = 10, 100
    p = to_distribution(torch.from_numpy(rng.random((6, g, g)) ** 3))
    q = to_distribution(torch.from_numpy(rng.random((6, g, g)) ** 3))
    fast = emd_sinkhorn(p, q, frame, reg=0.005, iters=2000).numpy()
    exact = np.array([emd_exact(a.numpy(), b.numpy(), frame) for a, b in zip(p, q, strict=True)])
    # entropic smoothing adds transport, so the fast value is above the exact one, but close
    assert (fast >= exact - 1e-6).all()
    np.testing.assert_allclose(fast, exact, rtol=0.05)


@pytest.mark.parametrize("cancel", [True, False])
def test_emd_sparse_equals_pot_on_the_dense_grid(cancel):
    rng = np.random.default_rng(4)
    h = w = 12
    yy, xx = np.mgrid[0:h, 0:w]
    m = ot.dist(np.stack([xx.ravel(), yy.ravel()], 1).astype(float), metric="euclidean")  # all pixel centres
    for density in (0.05, 0.3, 1.0):
        for _ in range(3):
            p = rng.random((h, w)) * (rng.random((h, w)) < density)
            q = rng.random((h, w)) * (rng.random((h, w)) < density)
            p[0, 0] += 0.1  # never all zero
            q[h - 1, 2] += 0.1
            dense = ot.emd2(p.ravel() / p.sum(), q.ravel() / q.sum(), m, numItermax=1_000_000)
            assert emd_sparse(p, q, cancel=cancel) == pytest.approx(dense, abs=1e-9)
            # scale-free, and the grid == frame case of emd_exact
            assert emd_sparse(3 * p, q, cancel=cancel) == pytest.approx(dense, abs=1e-9)
            assert emd_exact(p / p.sum(), q / q.sum(), frame=w) == pytest.approx(dense, abs=1e-9)


@pytest.mark.parametrize("cancel", [True, False])
def test_emd_sparse_closed_forms(cancel):
    p, q = np.zeros((2, 20, 30))
    p[2, 5] = 1.0
    q[2 + 4, 5 + 3] = 7.0  # a delta moved by (3, 4) pixels, any mass
    assert emd_sparse(p, q, cancel=cancel) == pytest.approx(5.0, abs=1e-12)
    assert emd_sparse(p, p, cancel=cancel) == pytest.approx(0.0, abs=1e-12)
    # two half-deltas: one stays, the other moves (3, 4) -> half of 5
    p, q = np.zeros((2, 20, 30))
    p[1, 1] = p[10, 10] = 1.0
    q[1, 1] = q[13, 14] = 1.0
    assert emd_sparse(p, q, cancel=cancel) == pytest.approx(2.5, abs=1e-12)
    # two half-deltas each moved 6 along x: 6
    p, q = np.zeros((2, 20, 30))
    p[0, 0] = p[5, 0] = 1.0
    q[0, 6] = q[5, 6] = 1.0
    assert emd_sparse(p, q, cancel=cancel) == pytest.approx(6.0, abs=1e-12)


def test_emd_sparse_rejects_bad_maps():
    p = np.zeros((8, 8))
    q = np.zeros((8, 8))
    q[3, 3] = 1
    with pytest.raises(ValueError, match="all zero"):
        emd_sparse(p, q)
    with pytest.raises(ValueError, match="all zero"):
        emd_sparse(q, p)
    with pytest.raises(ValueError, match="negative"):
        emd_sparse(q - 0.1, q)
    with pytest.raises(ValueError, match="shape"):
        emd_sparse(q, np.ones((8, 9)))
