"""Uncertainty over people: cluster bootstrap, identity-level tests and three-state verdicts.

A study's unit of replication is the person, not the pair: pairs share photos and people, so a
standard error over pairs overstates precision. Every finding is therefore reduced first to one
number per identity, its **per-identity effect** d_i (e.g. the mean BC of the identity's same pairs
minus the mean BC of the different pairs it takes part in), and the study's effect is the mean of
the d_i (every person weighs the same, however many photos they have).

* :func:`cluster_bootstrap`: resampling people with replacement (each keeps all their pairs, i.e.
  their d_i) gives the sampling distribution of that mean; the 95 % interval is its 2.5 and 97.5
  percentiles (percentile bootstrap, seeded, ``n_resamples`` >= 2000).
* :func:`sign_flip_test`: the identity-level test of "no effect": under H0 each d_i is symmetric
  about 0, so flipping signs at random gives the null distribution of the mean; two-sided p-value,
  exact (every sign pattern) when 2^n <= ``n_resamples``, else Monte Carlo with the +1 correction.
  It reproduces ``scipy.stats.permutation_test(..., permutation_type='samples')``.
* :func:`verdict`: ``holds`` when the interval excludes 0 in the expected direction and the
  sign-flip test agrees (p < 0.05), ``reversed`` when both say the other way, ``not established
  with N people`` otherwise (with 6 people the smallest two-sided p is 2/64: every person must
  agree in sign).
* :func:`profile_test`: do people have their own class profile? The between- over within-identity
  sum of squares of per-image class-share vectors (PERMANOVA's pseudo-F with Euclidean distance),
  its p-value from permuting identity labels over images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "N_RESAMPLES",
    "Estimate",
    "cluster_bootstrap",
    "sign_flip_test",
    "verdict",
    "estimate",
    "profile_test",
]

#: bootstrap resamples and sign flips of every finding
N_RESAMPLES = 4000


@dataclass(frozen=True)
class Estimate:
    """A per-identity effect summarised over people.

    ``effect``: mean of the per-identity effects; ``ci_low``/``ci_high``: 95 % cluster-bootstrap
    interval; ``p_value``: two-sided sign-flip test; ``n_identities``: people with an effect;
    ``verdict``: :func:`verdict` for the expected ``direction`` (+1 or -1).
    """

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_identities: int
    verdict: str


def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(seed)


def cluster_bootstrap(
    effects: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int | Sequence[int] = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """(n,) per-identity effects -> the percentile interval of their mean over identities resampled
    with replacement: ``n_resamples`` draws of n identities, seeded. (nan, nan) for no identity;
    a single identity gives (d, d) (nothing to resample: see :func:`verdict`)."""
    d = np.asarray(effects, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    idx = _rng(seed).integers(0, d.size, size=(n_resamples, d.size))  # (B, n)
    means = d[idx].mean(axis=1)  # (B,)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def sign_flip_test(
    effects: Sequence[float] | np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int | Sequence[int] = 0
) -> float:
    """(n,) per-identity effects -> two-sided p-value of H0 "symmetric about 0" for their mean.

    Exact over all 2^n sign patterns when 2^n <= ``n_resamples``; otherwise ``n_resamples`` random
    patterns and p = (1 + #as extreme) / (1 + n_resamples). Two-sided: twice the smaller one-sided
    p-value, at most 1 (scipy's definition, with its relative tolerance for ties).
    """
    d = np.asarray(effects, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan
    observed = d.mean()
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2^n, n)
        null = (signs * d).mean(axis=1)
        extra = 0
    else:
        signs = _rng(seed).choice((1.0, -1.0), size=(n_resamples, n))
        null = (signs * d).mean(axis=1)
        extra = 1
    tol = abs(observed) * 1e-14 * 100  # scipy: eps * 100 relative to the statistic
    greater = (np.count_nonzero(null >= observed - tol) + extra) / (null.size + extra)
    less = (np.count_nonzero(null <= observed + tol) + extra) / (null.size + extra)
    return float(min(1.0, 2 * min(greater, less)))


def verdict(
    ci_low: float, ci_high: float, direction: int, n_identities: int, p_value: float | None = None, alpha: float = 0.05
) -> str:
    """``holds`` (the interval excludes 0 on the side of ``direction``: +1 for "greater than 0",
    -1 for "less than 0"), ``reversed`` (it excludes 0 on the other side) or ``not established with
    N people`` (it contains 0, or fewer than 2 people: no interval). With ``p_value``, the
    identity-level test must agree (p < ``alpha``): with few people a percentile interval can
    exclude 0 while flipping the people's signs cannot rule chance out, and then nothing is
    established."""
    people = f"{n_identities} {'person' if n_identities == 1 else 'people'}"
    if n_identities < 2 or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return f"not established with {people}"
    if (ci_low > 0 or ci_high < 0) and (p_value is None or p_value < alpha):
        return "holds" if (ci_low > 0) == (direction > 0) else "reversed"
    return f"not established with {people}"


def estimate(
    effects: Sequence[float] | np.ndarray,
    direction: int,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int | Sequence[int] = 0,
) -> Estimate:
    """Effect, 95 % cluster-bootstrap interval, sign-flip p-value and verdict (interval and test) of
    per-identity effects (NaN effects, people without one, are dropped)."""
    d = np.asarray(effects, dtype=np.float64)
    d = d[np.isfinite(d)]
    low, high = cluster_bootstrap(d, n_resamples=n_resamples, seed=seed)
    p = sign_flip_test(d, n_resamples=n_resamples, seed=seed)
    return Estimate(
        effect=float(d.mean()) if d.size else math.nan,
        ci_low=low,
        ci_high=high,
        p_value=p,
        n_identities=int(d.size),
        verdict=verdict(low, high, direction, int(d.size), p),
    )


def pseudo_f(profiles: np.ndarray, labels: np.ndarray) -> float:
    """(n, K) profiles, (n,) integer group labels 0..g-1 -> between / within sum of squares, each
    divided by its degrees of freedom (g - 1 and n - g): PERMANOVA's pseudo-F for Euclidean
    distances. Between = sum_g |S_g|^2 / n_g - |S|^2 / n for group sums S_g; within = total - between."""
    n = len(labels)
    counts = np.bincount(labels)
    g = int(np.count_nonzero(counts))
    sums = np.zeros((len(counts), profiles.shape[1]))
    np.add.at(sums, labels, profiles)
    keep = counts > 0
    between = float(((sums[keep] ** 2).sum(1) / counts[keep]).sum() - (profiles.sum(0) ** 2).sum() / n)
    within = float(((profiles - profiles.mean(0)) ** 2).sum()) - between
    if n == g or within <= 1e-12 * max(between, 1e-300):
        return math.inf if between > 0 else math.nan
    return (between / (g - 1)) / (within / (n - g))


def profile_test(
    profiles: np.ndarray, identities: Sequence[str], *, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Are class profiles more alike within a person than between people?

    ``profiles``: (n_images, K) class shares of each image (e.g. % of its top-1 % pixels per class);
    ``identities``: (n_images,) whose photo it is. Returns (pseudo-F, p-value): p = (1 + #permuted
    F >= observed) / (1 + ``n_resamples``), permuting identity labels over images (group sizes
    kept). Needs >= 2 people and more images than people; else (nan, nan).
    """
    x = np.asarray(profiles, dtype=np.float64)
    _, labels = np.unique(np.asarray(identities), return_inverse=True)
    if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
        return math.nan, math.nan
    observed = pseudo_f(x, labels)
    rng = _rng(seed)
    hits = sum(pseudo_f(x, rng.permutation(labels)) >= observed * (1 - 1e-12) for _ in range(n_resamples))
    return float(observed), float((1 + hits) / (1 + n_resamples))
