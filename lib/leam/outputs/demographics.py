"""Demographic splits (paper RQ7): metadata reading, FG-NET ages, Mann-Whitney U tests.

Inputs are optional: an identity CSV (``identity,gender,ethnicity``) and per-image ages, either a
CSV (``identity,image,age``) or ``fgnet``: ages parsed from FG-NET file names, ``001A02.JPG`` =
subject 001 at age 2 (an optional letter after the age distinguishes photos at the same age).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from scipy.stats import mannwhitneyu

__all__ = ["FGNET_NAME", "fgnet_age", "read_identities", "read_ages", "group_tests"]

FGNET_NAME = re.compile(r"^(?P<subject>\d{3})A(?P<age>\d{2})[a-z]?\.jpe?g$", re.IGNORECASE)


def fgnet_age(image: str) -> tuple[str, int] | None:
    """``001A02.JPG`` -> ("001", 2); None for other names."""
    m = FGNET_NAME.match(image)
    return (m["subject"], int(m["age"])) if m else None


def read_identities(path: str | Path) -> pd.DataFrame:
    """identity, gender, ethnicity (strings; missing values allowed) from a CSV."""
    df = pd.read_csv(path, dtype=str)
    missing = {"identity", "gender", "ethnicity"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected identity,gender,ethnicity")
    if df["identity"].duplicated().any():
        dup = df.loc[df["identity"].duplicated(), "identity"].iloc[0]
        raise ValueError(f"{path}: identity {dup!r} appears more than once")
    return df[["identity", "gender", "ethnicity"]]


def read_ages(spec: str, images: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """identity, image, age for ``images`` ((identity, image) pairs): from a CSV or FG-NET names."""
    if spec == "fgnet":
        rows = [(i, im, a[1]) for i, im in images if (a := fgnet_age(im)) is not None]
        return pd.DataFrame(rows, columns=["identity", "image", "age"])
    df = pd.read_csv(spec, dtype={"identity": str, "image": str})
    missing = {"identity", "image", "age"} - set(df.columns)
    if missing:
        raise ValueError(f"{spec}: missing column(s) {sorted(missing)}; expected identity,image,age")
    return df[["identity", "image", "age"]]


def group_tests(drops: pd.DataFrame, factor: str) -> pd.DataFrame:
    """Mann-Whitney U (two-sided) of occlusion drops between every two groups of ``factor``.

    ``drops``: rows with columns [factor, method, size_pct, drop]. One test per pair of groups,
    method and size; columns factor, group_a, group_b, method, size_pct, n_a, n_b, mean_a, mean_b,
    u (for group_a), p_value.
    """
    out = []
    d = drops.dropna(subset=[factor])
    for (method, size), g in d.groupby(["method", "size_pct"], sort=True):
        groups = sorted(g[factor].unique())
        for a, b in itertools.combinations(groups, 2):
            xa = g.loc[g[factor] == a, "drop"].to_numpy()
            xb = g.loc[g[factor] == b, "drop"].to_numpy()
            if len(xa) == 0 or len(xb) == 0:
                continue
            res = mannwhitneyu(xa, xb, alternative="two-sided")
            out.append(
                {
                    "factor": factor,
                    "group_a": a,
                    "group_b": b,
                    "method": method,
                    "size_pct": float(size),
                    "n_a": len(xa),
                    "n_b": len(xb),
                    "mean_a": float(xa.mean()),
                    "mean_b": float(xb.mean()),
                    "u": float(res.statistic),
                    "p_value": float(res.pvalue),
                }
            )
    cols = ["factor", "group_a", "group_b", "method", "size_pct", "n_a", "n_b", "mean_a", "mean_b", "u", "p_value"]
    return pd.DataFrame(out, columns=cols)
