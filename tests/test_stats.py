"""leam.core.stats against independent oracles: a plain-loop bootstrap, coverage on simulated studies with
a known effect, scipy's permutation test, and PERMANOVA's distance-matrix formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from leam.core.stats import cluster_bootstrap, estimate, profile_test, pseudo_f, sign_flip_test, verdict


def _plain_bootstrap(d, n_resamples, seed):
    """The cluster bootstrap written out: draw n people with replacement, take the mean of their
    per-identity effects, repeat; percentiles of the means."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(d), size=len(d))
        means.append(sum(d[i] for i in pick) / len(d))
    return np.quantile(means, [0.025, 0.975])


def test_cluster_bootstrap_equals_the_plain_loop():
    d = np.random.default_rng(3).normal(0.2, 1.0, size=11)
    low, high = cluster_bootstrap(d, n_resamples=2000, seed=7)
    ref = _plain_bootstrap(d, 2000, 7)
    assert low == pytest.approx(ref[0], abs=1e-12)
    assert high == pytest.approx(ref[1], abs=1e-12)
    assert low < d.mean() < high


def _study(rng, n_people, effect):
    """Pairs nested in people: a person's pairs share the person's offset u_i (so pairs are not
    independent) and each person has 3-12 pairs. Returns per-identity effects (mean of their pairs)."""
    out = []
    for _ in range(n_people):
        u = rng.normal(0, 0.5)
        m = rng.integers(3, 13)
        out.append(np.mean(effect + u + rng.normal(0, 1.0, size=m)))
    return np.array(out)


def test_bootstrap_interval_covers_the_true_effect_in_92_to_98_percent_of_studies():
    rng = np.random.default_rng(2026)
    truth, hits, n_studies = 0.3, 0, 400
    for s in range(n_studies):
        d = _study(rng, 40, truth)
        low, high = cluster_bootstrap(d, n_resamples=2000, seed=s)
        hits += low <= truth <= high
    coverage = hits / n_studies
    assert 0.92 <= coverage <= 0.98, coverage


def test_pairs_as_units_would_overstate_precision():
    """The reason for clustering: an interval over pairs is narrower than the one over people."""
    rng = np.random.default_rng(5)
    pairs, people = [], []
    for _ in range(20):
        u = rng.normal(0, 0.5)
        x = 0.3 + u + rng.normal(0, 0.2, size=10)
        pairs += list(x)
        people.append(x.mean())
    lo_pairs, hi_pairs = cluster_bootstrap(pairs, seed=0)
    lo_people, hi_people = cluster_bootstrap(people, seed=0)
    assert (hi_pairs - lo_pairs) < 0.5 * (hi_people - lo_people)


@pytest.mark.parametrize("n", [5, 8, 11])
def test_sign_flip_exact_equals_scipy(n):
    d = np.random.default_rng(n).normal(0.4, 1.0, size=n)
    ref = sps.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf
    ).pvalue
    assert sign_flip_test(d, n_resamples=4000) == pytest.approx(ref, rel=1e-12)


def test_sign_flip_monte_carlo_agrees_with_scipy():
    d = np.random.default_rng(1).normal(0.25, 1.0, size=25)
    ref = sps.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=20000, rng=0
    ).pvalue
    assert sign_flip_test(d, n_resamples=20000, seed=1) == pytest.approx(ref, abs=0.01)


def test_verdicts():
    assert verdict(0.1, 0.3, +1, 6) == "holds"
    assert verdict(-0.3, -0.1, -1, 6) == "holds"
    assert verdict(-0.3, -0.1, +1, 6) == "reversed"
    assert verdict(-0.1, 0.3, +1, 4) == "not established with 4 people"
    assert verdict(0.1, 0.3, +1, 6, p_value=0.0625) == "not established with 6 people"  # the test disagrees
    assert verdict(0.1, 0.3, +1, 6, p_value=0.03125) == "holds"
    assert verdict(0.1, 0.1, +1, 1) == "not established with 1 person"
    e = estimate([0.5, 0.6, 0.4, 0.55, 0.45, 0.5, math.nan], +1)
    assert e.n_identities == 6 and e.verdict == "holds" and e.effect == pytest.approx(0.5)
    assert e.p_value == pytest.approx(2 / 64)  # every sign pattern: only all-plus and all-minus are as extreme


def _permanova_f(x, labels):
    """PERMANOVA's pseudo-F from the distance matrix (Anderson 2001): SS_T = sum_{i<j} d_ij^2 / n,
    SS_W = sum_g sum_{i<j in g} d_ij^2 / n_g."""
    n = len(x)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    ss_t = sum(d2[i, j] for i in range(n) for j in range(i + 1, n)) / n
    ss_w = 0.0
    groups = sorted(set(labels))
    for g in groups:
        idx = [i for i in range(n) if labels[i] == g]
        ss_w += sum(d2[i, j] for a, i in enumerate(idx) for j in idx[a + 1 :]) / len(idx)
    return ((ss_t - ss_w) / (len(groups) - 1)) / (ss_w / (n - len(groups)))


def test_pseudo_f_equals_the_distance_matrix_formula():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(5), size=17) * 100
    labels = np.array([0] * 4 + [1] * 6 + [2] * 3 + [3] * 4)
    assert pseudo_f(x, labels) == pytest.approx(_permanova_f(x, list(labels)), rel=1e-10)


def test_profile_test_finds_people_with_their_own_profile_and_not_otherwise():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(6), 5)
    centres = rng.dirichlet(np.ones(4) * 2, size=6) * 100
    own = centres[people] + rng.normal(0, 1.0, size=(30, 4))
    shared = centres[0] + rng.normal(0, 1.0, size=(30, 4))
    f_own, p_own = profile_test(own, people.astype(str), n_resamples=999)
    f_shared, p_shared = profile_test(shared, people.astype(str), n_resamples=999)
    assert p_own == pytest.approx(1 / 1000)  # nothing permuted reaches the observed separation
    assert f_own > 10 and p_shared > 0.05
    # the p-value is the permutation distribution's, recomputed here with the same draws
    rng2 = np.random.default_rng(0)
    _, labels = np.unique(people.astype(str), return_inverse=True)
    f_obs = _permanova_f(shared, list(labels))
    hits = sum(_permanova_f(shared, list(rng2.permutation(labels))) >= f_obs * (1 - 1e-12) for _ in range(199))
    assert profile_test(shared, people.astype(str), n_resamples=199, seed=0)[1] == pytest.approx((1 + hits) / 200)
    assert math.isnan(profile_test(own[:3], ["a", "b", "c"])[1])  # one photo per person: no within-person spread
