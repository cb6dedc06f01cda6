"""The study's findings, each an effect over people with its 95 % interval, test, verdict and control.

Every finding is reduced to one **per-identity effect** d_i (side A minus side B, each side the
mean over the identity's units), then summarised by :func:`leam.core.stats.estimate`: the mean of the
d_i, a cluster-bootstrap 95 % interval over identities, a sign-flip p-value and a verdict (holds /
reversed / not established with N people). A pooled row (``layer`` = ``all layers``) averages an
identity's per-layer effects first. Where a model-free **control** exists, the same is done for the
control's effect c_i and for the **excess** d_i - c_i (the part of the effect the control does not
explain), with its own interval and verdict.

Findings (``finding`` column; A vs B; the paper's direction):

* ``cosine``: same- vs different-identity cosine of photo pairs (+); units: unordered photo pairs;
* ``maps_bc`` / ``maps_emd``: BC (+) / EMD (-) of same- vs different-identity image maps, per
  layer and selection; control: the geometry baseline (model-free landmark maps of the same pairs,
  as sparse as the LEAM maps, :mod:`leam.core.baselines`); units: unordered image pairs;
* ``central`` / ``central_nose``: share (%) of nose + eyes + brows (nose alone) in a map's top 1 %
  vs all its activated pixels (+), per ordered pair's map; control: the centre baseline (the same
  number of pixels nearest the frame centre), so the excess is LEAM's top 1 % minus a centred disc;
* ``occlusion``: cosine drop with a source model's top-k % LEAM pixels vs as many random pixels
  inside the target model's window (+), per (source, target) cell and size; ``cell`` says
  ``self`` (source = target) or ``transfer``; units: ordered (anchor, positive) pairs;
* ``transfer``: per target, drop with the target's own LEAM pixels vs the mean over the other
  sources' pixels (+), on the pairs every source has;
* ``atlas_identity`` / ``atlas_own`` / ``atlas_population``: held-out photos occluded with their
  identity's atlas vs the population atlas (+: person-specific pixels), their own map vs the
  population atlas (+), the population atlas vs random pixels (+); units: held-out photos;
* ``profiles``: are class profiles at top 1 % more alike within than between people? effect =
  pseudo-F (between / within), p from permuting identity labels; holds when p < 0.05.

"top k %" is relative to the map's *activated* pixels in counts and BC/EMD (``count.topk_of``), and
to *all* frame pixels in occlusion (``occlude.sizes``).
"""

from __future__ import annotations

import logging
import math
import warnings
import zlib
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats as sps

from leam.core.baselines import CENTRAL, GEOMETRY
from leam.core.classes import CLASS_NAMES, class_column
from leam.core.stats import N_RESAMPLES, estimate, profile_test

__all__ = ["FINDINGS_SCHEMA", "PROFILE_SCHEMA", "FINDING_ORDER", "compute_findings", "identity_profiles"]

log = logging.getLogger(__name__)

#: findings in report order, with the claim each tests
FINDING_ORDER: dict[str, str] = {
    "cosine": "same-identity photos are more alike than different-identity photos (the model works)",
    "maps_bc": "LEAM maps of one person overlap more than maps of two people (BC higher)",
    "maps_emd": "LEAM maps of one person are closer than maps of two people (EMD lower)",
    "central": "the top 1 % pixels hold more nose + eyes + brows than all activated pixels",
    "central_nose": "the top 1 % pixels hold more nose than all activated pixels",
    "occlusion": "occluding the top LEAM pixels drops the cosine more than as many random pixels",
    "transfer": "a model's own LEAM pixels hurt it more than other models' pixels",
    "atlas_identity": "a person's atlas (their other photos' maps) hurts a held-out photo more than the population's",
    "atlas_own": "a photo's own map hurts it more than the population atlas",
    "atlas_population": "the population atlas hurts more than random pixels",
    "profiles": "class profiles of the top 1 % are more alike within a person than between people",
}

#: what the paper reports for each finding, as it gives it
PAPER = {
    "cosine": "implicit: every model recognises these people (Table 9's drops start from same-identity cosines)",
    "maps_bc": (
        "top 1 %, per layer of the six IResNets: BC same identity 0.20-0.57 (Table 3) vs different identity "
        "0.04-0.13 (Table 4); the abstract says 0.32-0.57 vs 0.04-0.13"
    ),
    "maps_emd": "EMD, frame px: same identity 5.99-14.77 (Table 5) vs different identity 11.54-29.31 (Table 6)",
    "central": (
        "Appendix B (Tables 12-20): the nose, eye and eyebrow rows rise as the threshold falls; the paper gives "
        "no figure for the three together"
    ),
    "central_nose": "nose 10.8 % of all activated pixels -> 20-30 % at the lowest thresholds (Appendix B)",
    "occlusion": (
        "1 % of the image: LEAM 0.1148 vs random 0.0286 (Table 9: IR_CASIA conv1 pixels, mean over the 9 target "
        "models; random over the whole image)"
    ),
    "transfer": (
        "the drop is largest for IR_CASIA (the source) and IR_VGG, which shares its backbone (Fig. 8, Table 21)"
    ),
    "atlas_identity": "not tested by the paper (its motivation: person-specific protection)",
    "atlas_own": "not tested by the paper",
    "atlas_population": "not tested by the paper",
    "profiles": "'activation patterns exhibit substantial variation across individuals' (Table 7; no test)",
}

FINDINGS_SCHEMA = pa.schema(
    [
        ("ord", pa.int32()),
        ("finding", pa.string()),
        ("claim", pa.string()),
        ("model", pa.string()),
        ("source_model", pa.string()),
        ("cell", pa.string()),
        ("layer", pa.string()),
        ("layer_idx", pa.int32()),
        ("selection", pa.string()),
        ("size_pct", pa.float64()),
        ("measure", pa.string()),
        ("a_label", pa.string()),
        ("a_mean", pa.float64()),
        ("b_label", pa.string()),
        ("b_mean", pa.float64()),
        ("effect", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("n_identities", pa.int32()),
        ("n_a", pa.int64()),
        ("n_b", pa.int64()),
        ("unit", pa.string()),
        ("direction", pa.int8()),
        ("verdict", pa.string()),
        ("control", pa.string()),
        ("control_effect", pa.float64()),
        ("excess", pa.float64()),
        ("excess_ci_low", pa.float64()),
        ("excess_ci_high", pa.float64()),
        ("excess_verdict", pa.string()),
        ("paper", pa.string()),
    ]
)

PROFILE_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("identity", pa.string()),
        ("class", pa.string()),
        ("n_images", pa.int32()),
        ("identity_pct", pa.float64()),
        ("others_pct", pa.float64()),
        ("deviation", pa.float64()),
        ("p_value", pa.float64()),
        ("q_value", pa.float64()),
        ("significant", pa.bool_()),
    ]
)

POOLED = "all layers"

#: meaning of every column of the ``findings`` view
FINDINGS_COLUMNS = {
    "ord": "position of the finding in the report's order",
    "finding": "finding key (cosine, maps_bc, maps_emd, central, central_nose, occlusion, transfer, atlas_*, profiles)",
    "claim": "what the finding claims, in words",
    "model": "the model measured (for occlusion, transfer and atlas: the target model that embeds the occluded photo)",
    "source_model": "model whose LEAM pixels were occluded (occlusion, transfer, atlas); NULL otherwise",
    "cell": "occlusion: 'self' (source = target) or 'transfer'; NULL otherwise",
    "layer": "layer name, or 'all layers' (an identity's mean over layers first); occlusion/atlas: the source layer",
    "layer_idx": "position of the layer, -1 for 'all layers'",
    "selection": "map selection compared or counted ('top1': the top 1 % of the activated pixels; 'full')",
    "size_pct": "occluded pixels, % of ALL frame pixels (occlusion, transfer, atlas); NULL otherwise",
    "measure": "what is compared, with its unit",
    "a_label": "side A of the contrast",
    "a_mean": "mean over identities of their side-A mean",
    "b_label": "side B of the contrast",
    "b_mean": "mean over identities of their side-B mean",
    "effect": "mean over identities of (A - B) per identity; profiles: pseudo-F",
    "ci_low": "95 % cluster-bootstrap interval of the effect over identities, low end",
    "ci_high": "95 % cluster-bootstrap interval of the effect over identities, high end",
    "p_value": "two-sided sign-flip permutation test of the per-identity effects (profiles: label permutation)",
    "n_identities": "people with both sides measured, count",
    "n_a": "units on side A, count (see unit)",
    "n_b": "units on side B, count (see unit)",
    "unit": "what n_a and n_b count (unordered or ordered pairs, maps, photos)",
    "direction": "+1 when the claim is A > B, -1 when it is A < B",
    "verdict": (
        "'holds' (interval excludes 0 in the claimed direction and p < 0.05), 'reversed' (both the other way), "
        "or 'not established with N people'"
    ),
    "control": "the model-free control beside the finding (NULL: none)",
    "control_effect": "the control's own A - B effect (mean over identities)",
    "excess": "effect minus control effect per identity, mean over identities: what the control does not explain",
    "excess_ci_low": "95 % interval of the excess, low end",
    "excess_ci_high": "95 % interval of the excess, high end",
    "excess_verdict": "verdict of the excess in the claimed direction",
    "paper": "what the paper reports for this finding",
}

#: meaning of every column of the ``identity_profiles`` view
PROFILE_COLUMNS = {
    "model": "face-recognition model",
    "identity": "person",
    "class": "face-parser class",
    "n_images": "the identity's photos with top-1 % maps, count",
    "identity_pct": "mean over the identity's photos of the class's % of their top-1 % pixels",
    "others_pct": "the same over every other identity's photos",
    "deviation": "identity_pct - others_pct, percentage points",
    "p_value": "Welch's t-test, the identity's photos vs the others'",
    "q_value": "Benjamini-Hochberg adjusted p over every identity x class cell of the model",
    "significant": "q_value < 0.05",
}


def _df(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    return con.execute(sql).df()


def _has(con: duckdb.DuckDBPyConnection, table: str, column: str | None = None) -> bool:
    cols = {
        r[0] for r in con.execute(f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}'").fetchall()
    }
    return bool(cols) and (column is None or column in cols)


class _Rows:
    """Collects finding rows; each row's resamples are seeded by the run's seed and the row's key."""

    def __init__(self, seed: int, n_resamples: int):
        self.seed, self.n_resamples = seed, n_resamples
        self.rows: list[dict] = []

    def add(
        self,
        finding: str,
        per: pd.DataFrame,
        *,
        measure: str,
        a_label: str,
        b_label: str,
        unit: str,
        direction: int,
        n_a: int | None = None,
        n_b: int | None = None,
        control: str | None = None,
        **key,
    ) -> None:
        """``per``: one row per identity with columns a, b (per-identity means) and, with a
        ``control``, c (the control's per-identity effect)."""
        per = per.dropna(subset=["a", "b"])
        name = "/".join(str(key.get(k)) for k in ("model", "source_model", "layer", "selection", "size_pct"))
        rng_key = [self.seed, zlib.crc32(f"{finding}/{name}".encode())]
        d = (per["a"] - per["b"]).to_numpy()
        est = estimate(d, direction, n_resamples=self.n_resamples, seed=rng_key)
        row: dict[str, object] = {c: None for c in FINDINGS_SCHEMA.names}
        row.update(
            ord=list(FINDING_ORDER).index(finding),
            finding=finding,
            claim=FINDING_ORDER[finding],
            measure=measure,
            a_label=a_label,
            b_label=b_label,
            a_mean=float(per["a"].mean()) if len(per) else None,
            b_mean=float(per["b"].mean()) if len(per) else None,
            effect=est.effect,
            ci_low=est.ci_low,
            ci_high=est.ci_high,
            p_value=est.p_value,
            n_identities=est.n_identities,
            n_a=n_a,
            n_b=n_b,
            unit=unit,
            direction=direction,
            verdict=est.verdict,
            paper=PAPER[finding],
        )
        row.update(key)
        if control is not None and "c" in per and per["c"].notna().any():
            ok = per.dropna(subset=["c"])
            ctrl = estimate(ok["c"].to_numpy(), direction, n_resamples=self.n_resamples, seed=rng_key)
            exc = estimate(
                (ok["a"] - ok["b"] - ok["c"]).to_numpy(), direction, n_resamples=self.n_resamples, seed=rng_key
            )
            row.update(
                control=control,
                control_effect=ctrl.effect,
                excess=exc.effect,
                excess_ci_low=exc.ci_low,
                excess_ci_high=exc.ci_high,
                excess_verdict=exc.verdict,
            )
        self.rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


def _cosine(con, out: _Rows) -> None:
    same = _df(con, "SELECT model, identity, avg(cosine) AS a FROM pairs GROUP BY model, identity")
    diff = _df(
        con,
        """WITH e AS (SELECT model, identity, image, embedding::DOUBLE[] AS v FROM embeddings),
           s AS (SELECT a.model, a.identity AS ia, b.identity AS ib, list_cosine_similarity(a.v, b.v) AS c
                 FROM e a JOIN e b ON a.model = b.model AND a.identity < b.identity)
           SELECT model, identity, avg(c) AS b FROM (SELECT model, ia AS identity, c FROM s
                                                    UNION ALL SELECT model, ib, c FROM s) GROUP BY model, identity""",
    )
    n = _df(con, "SELECT model, count(*) // 2 AS n_a FROM pairs GROUP BY model")
    ndiff = _df(
        con,
        """SELECT a.model, count(*) AS n_b FROM embeddings a JOIN embeddings b
           ON a.model = b.model AND a.identity < b.identity GROUP BY a.model""",
    )
    for model, per in same.merge(diff, on=["model", "identity"], how="left").groupby("model", sort=True):
        na = n.loc[n.model == model, "n_a"]
        nb = ndiff.loc[ndiff.model == model, "n_b"]
        out.add(
            "cosine",
            per,
            model=model,
            measure="cosine",
            a_label="same identity",
            b_label="different identity",
            unit="unordered photo pairs",
            direction=+1,
            n_a=int(na.iloc[0]) if len(na) else 0,
            n_b=int(nb.iloc[0]) if len(nb) else 0,
        )


def _maps(con, out: _Rows) -> None:
    if not _has(con, "compare"):
        return
    sides = _df(
        con,
        """WITH c AS (SELECT * FROM compare WHERE skipped IS NULL),
           long AS (SELECT model, layer, layer_idx, selection, kind, identity_a AS identity, bc, emd FROM c
                    UNION ALL
                    SELECT model, layer, layer_idx, selection, kind, identity_b, bc, emd FROM c
                    WHERE kind = 'different')
           SELECT model, layer, layer_idx, selection, kind, identity, avg(bc) AS bc, avg(emd) AS emd
           FROM long GROUP BY ALL""",
    )
    counts = _df(
        con,
        """SELECT model, layer, selection, count(*) FILTER (WHERE kind = 'same') AS n_a,
                  count(*) FILTER (WHERE kind = 'different') AS n_b
           FROM compare WHERE skipped IS NULL GROUP BY ALL""",
    )
    if sides.empty:
        return
    wide = sides.pivot_table(
        index=["model", "layer", "layer_idx", "selection", "identity"], columns="kind", values=["bc", "emd"]
    )
    wide.columns = [f"{m}_{k}" for m, k in wide.columns]
    wide = wide.reset_index()
    for col in ("bc_same", "bc_different", "emd_same", "emd_different"):
        if col not in wide:
            wide[col] = np.nan
    is_geo = wide.selection.str.startswith(GEOMETRY)
    geo = wide[is_geo].assign(selection=wide[is_geo].selection.str.removeprefix(GEOMETRY))
    geo = geo.set_index(["model", "selection", "layer", "identity"])
    maps = wide[~is_geo]
    control = "geometry baseline: the same pairs on model-free landmark maps, as sparse as the LEAM maps"
    for measure, finding, direction in (("bc", "maps_bc", +1), ("emd", "maps_emd", -1)):
        label = "BC" if measure == "bc" else "EMD (frame px)"
        ctrl = (geo[f"{measure}_same"] - geo[f"{measure}_different"]).rename("c")
        for (model, selection), grp in maps.groupby(["model", "selection"], sort=True):
            same = dict(  # what every row of this model and selection shares, per layer and pooled
                model=model,
                selection=selection,
                measure=label,
                a_label="same identity",
                b_label="different identity",
                direction=direction,
                control=control,
            )
            per_layer = []
            for (layer, li), g in sorted(grp.groupby(["layer", "layer_idx"], sort=False), key=lambda x: x[0][1]):
                per = pd.DataFrame(
                    {"identity": g.identity, "a": g[f"{measure}_same"], "b": g[f"{measure}_different"]}
                ).set_index("identity")
                key = (model, selection, layer)
                per["c"] = ctrl.loc[key].reindex(per.index) if key in ctrl.index.droplevel(3) else np.nan
                cnt = counts[(counts.model == model) & (counts.layer == layer) & (counts.selection == selection)]
                out.add(
                    finding,
                    per.reset_index(),
                    layer=layer,
                    layer_idx=int(li),
                    unit="unordered image pairs (per layer)",
                    n_a=int(cnt.n_a.sum()),
                    n_b=int(cnt.n_b.sum()),
                    **same,
                )
                per_layer.append(per)
            pooled = pd.concat(per_layer).groupby(level=0)[["a", "b", "c"]].mean()  # a person's mean over layers
            cnt = counts[(counts.model == model) & (counts.selection == selection)]
            out.add(
                finding,
                pooled.rename_axis("identity").reset_index(),
                layer=POOLED,
                layer_idx=-1,
                unit="unordered image pairs (summed over layers)",
                n_a=int(cnt.n_a.sum()),
                n_b=int(cnt.n_b.sum()),
                **same,
            )


def _central(con, out: _Rows) -> None:
    sel = {r[0] for r in con.execute("SELECT DISTINCT selection FROM counts").fetchall()}
    if not {"top1", "full"} <= sel:
        return
    have_centre = _has(con, "centre_baseline")
    for finding, classes, col in (("central", CENTRAL, "central"), ("central_nose", ("nose",), "nose")):
        cols = " + ".join(class_column(CLASS_NAMES.index(c)) for c in classes)
        centre = (
            """LEFT JOIN centre_baseline z ON z.identity = t.identity AND z.image = t.anchor
                AND z.n_pixels = t.n_selected"""
            if have_centre
            else ""
        )
        zcol = f"z.disc_{col}_pct" if have_centre else "NULL::DOUBLE"
        maps = _df(
            con,
            f"""WITH t AS (SELECT model, layer, layer_idx, identity, anchor, positive, n_selected,
                                  100.0 * ({cols}) / n_selected AS share
                           FROM counts WHERE selection = 'top1' AND n_selected > 0),
                     f AS (SELECT model, layer, identity, anchor, positive, 100.0 * ({cols}) / n_selected AS share
                           FROM counts WHERE selection = 'full' AND n_selected > 0)
                SELECT t.model, t.layer, t.layer_idx, t.identity, t.share AS a, f.share AS b, {zcol} AS z
                FROM t JOIN f USING (model, layer, identity, anchor, positive) {centre}""",
        )
        for model, grp in maps.groupby("model", sort=True):
            layers = list(grp.groupby(["layer", "layer_idx"], sort=False))
            layers.sort(key=lambda x: x[0][1])
            for (layer, li), g in [((POOLED, -1), grp)] + layers:
                per = g.groupby("identity").agg(a=("a", "mean"), b=("b", "mean"), z=("z", "mean"))
                per["c"] = per["z"] - per["b"]  # the centred disc's share minus all activated pixels'
                out.add(
                    finding,
                    per.reset_index(),
                    model=model,
                    layer=layer,
                    layer_idx=int(li),
                    selection="top1",
                    measure=f"{'nose + eyes + brows' if col == 'central' else 'nose'}, % of the selected pixels",
                    a_label="top 1 % of the activated pixels",
                    b_label="all activated pixels",
                    unit="maps of ordered (anchor, positive) pairs" + (" x layers" if layer == POOLED else ""),
                    direction=+1,
                    n_a=len(g),
                    n_b=len(g),
                    control="centre baseline: as many pixels nearest the frame centre" if have_centre else None,
                )


def _occlusion(con, out: _Rows) -> None:
    per = _df(
        con,
        """SELECT l.source_model, l.source_layer, l.model, l.size_pct, l.identity,
                  avg(l.drop) AS a, avg(r.drop) AS b, count(*) AS n
           FROM occlusion l JOIN occlusion r
             USING (source_model, source_layer, model, identity, anchor, positive, size_pct)
           WHERE l.method = 'leam' AND r.method = 'random' AND l.drop IS NOT NULL AND r.drop IS NOT NULL
           GROUP BY ALL""",
    )
    for (src, layer, model, size), g in per.groupby(["source_model", "source_layer", "model", "size_pct"], sort=True):
        out.add(
            "occlusion",
            g,
            model=model,
            source_model=src,
            cell="self" if src == model else "transfer",
            layer=layer,
            size_pct=float(size),
            measure="cosine drop",
            a_label=f"top {size:g} % LEAM pixels of {src}",
            b_label=f"{size:g} % random pixels in {model}'s window",
            unit="ordered (anchor, positive) pairs; % of all frame pixels",
            direction=+1,
            n_a=int(g.n.sum()),
            n_b=int(g.n.sum()),
        )
    tr = _df(
        con,
        """WITH l AS (SELECT * FROM occlusion WHERE method = 'leam' AND drop IS NOT NULL),
                own AS (SELECT model, size_pct, identity, anchor, positive, drop FROM l WHERE source_model = model),
                oth AS (SELECT model, size_pct, identity, anchor, positive, avg(drop) AS drop, count(*) AS n_src
                        FROM l WHERE source_model <> model GROUP BY ALL)
           SELECT model, size_pct, identity, avg(own.drop) AS a, avg(oth.drop) AS b, count(*) AS n,
                  max(n_src) AS n_src
           FROM own JOIN oth USING (model, size_pct, identity, anchor, positive) GROUP BY ALL""",
    )
    for (model, size), g in tr.groupby(["model", "size_pct"], sort=True):
        out.add(
            "transfer",
            g,
            model=model,
            source_model=model,
            cell="self vs transfer",
            size_pct=float(size),
            measure="cosine drop",
            a_label=f"{model}'s own top {size:g} % LEAM pixels",
            b_label=f"the other {int(g.n_src.max())} sources' top {size:g} % LEAM pixels (mean)",
            unit="ordered (anchor, positive) pairs; % of all frame pixels",
            direction=+1,
            n_a=int(g.n.sum()),
            n_b=int(g.n.sum()),
        )


def _atlas(con, out: _Rows) -> None:
    rows = _df(
        con,
        """SELECT source_model, source_layer, model, size_pct, identity, image, method, drop
           FROM atlas WHERE drop IS NOT NULL""",
    )
    if rows.empty:
        return
    rows["method"] = "m_" + rows["method"]  # the method 'identity' would clash with the column
    wide = rows.pivot_table(
        index=["source_model", "source_layer", "model", "size_pct", "identity", "image"],
        columns="method",
        values="drop",
    ).reset_index()
    for finding, a, b in (
        ("atlas_identity", "identity", "population"),
        ("atlas_own", "own", "population"),
        ("atlas_population", "population", "random"),
    ):
        if f"m_{a}" not in wide or f"m_{b}" not in wide:
            continue
        for (src, layer, model, size), g in wide.groupby(
            ["source_model", "source_layer", "model", "size_pct"], sort=True
        ):
            g = g.dropna(subset=[f"m_{a}", f"m_{b}"])
            per = g.groupby("identity").agg(a=(f"m_{a}", "mean"), b=(f"m_{b}", "mean")).reset_index()
            out.add(
                finding,
                per,
                model=model,
                source_model=src,
                layer=layer,
                size_pct=float(size),
                measure="cosine drop",
                a_label=f"{a} {'atlas' if a in ('identity', 'population') else 'map'} ({src} {layer})",
                b_label=f"{b} {'atlas' if b in ('identity', 'population') else 'pixels'}",
                unit="held-out photos; % of all frame pixels",
                direction=+1,
                n_a=len(g),
                n_b=len(g),
            )


def _image_profiles(con) -> pd.DataFrame:
    """Per model and photo: the mean over its top-1 % maps (all layers, positives) of each class's %
    of the selected pixels; columns model, identity, image and one per class name."""
    shares = ", ".join(f'avg(100.0 * {class_column(i)} / n_selected) AS "{name}"' for i, name in enumerate(CLASS_NAMES))
    return _df(
        con,
        f"""SELECT model, identity, anchor AS image, {shares} FROM counts
            WHERE selection = 'top1' AND n_selected > 0 GROUP BY model, identity, anchor
            ORDER BY model, identity, image""",
    )


def _profiles(out: _Rows, profiles: pd.DataFrame) -> None:
    for model, g in profiles.groupby("model", sort=True):
        seen = [c for c in CLASS_NAMES if g[c].notna().all()]  # a class the parser cannot see is NULL, not 0
        x = g[seen].to_numpy()
        f, p = profile_test(x, g.identity.to_numpy(), n_resamples=out.n_resamples, seed=out.seed)
        n_id = g.identity.nunique()
        row: dict[str, object] = {c: None for c in FINDINGS_SCHEMA.names}
        row.update(
            ord=list(FINDING_ORDER).index("profiles"),
            finding="profiles",
            claim=FINDING_ORDER["profiles"],
            model=model,
            layer=POOLED,
            layer_idx=-1,
            selection="top1",
            measure="pseudo-F: between / within-identity variance of per-photo class shares",
            a_label="between identities",
            b_label="within identities",
            effect=None if math.isnan(f) else f,
            p_value=None if math.isnan(p) else p,
            n_identities=n_id,
            n_a=len(g),
            n_b=len(g),
            unit="photos (class shares averaged over their maps)",
            direction=+1,
            verdict="holds" if p < 0.05 else f"not established with {n_id} {'person' if n_id == 1 else 'people'}",
            paper=PAPER["profiles"],
        )
        out.rows.append(row)


def identity_profiles(profiles: pd.DataFrame) -> pa.Table:
    """Per model, identity and class: the identity's mean class share (top 1 %, per photo) minus the
    other identities' photos' mean, Welch's t-test per cell, Benjamini-Hochberg q over every cell of
    the model; ``significant`` when q < 0.05. Classes no photo has are left out."""
    rows = []
    for model, g in profiles.groupby("model", sort=True):
        cells = []
        for cls in CLASS_NAMES:
            if not (g[cls] > 0).any():
                continue
            for ident, mine in g.groupby("identity", sort=True):
                others = g.loc[g.identity != ident, cls]
                if len(mine) < 2 or len(others) < 2:
                    p = math.nan
                else:
                    with warnings.catch_warnings():  # near-constant shares: scipy warns, p may be NaN
                        warnings.simplefilter("ignore", RuntimeWarning)
                        p = float(sps.ttest_ind(mine[cls], others, equal_var=False).pvalue)
                cells.append([model, ident, cls, len(mine), float(mine[cls].mean()), float(others.mean()), p])
        ps = np.array([c[-1] for c in cells], dtype=float)
        q = np.full_like(ps, np.nan)
        ok = np.isfinite(ps)
        if ok.any():
            q[ok] = sps.false_discovery_control(ps[ok], method="bh")
        for c, qi in zip(cells, q, strict=True):
            rows.append(
                {
                    "model": c[0],
                    "identity": c[1],
                    "class": c[2],
                    "n_images": c[3],
                    "identity_pct": c[4],
                    "others_pct": c[5],
                    "deviation": c[4] - c[5] if math.isfinite(c[5]) else None,
                    "p_value": None if math.isnan(c[6]) else c[6],
                    "q_value": None if math.isnan(qi) else float(qi),
                    "significant": bool(qi < 0.05) if math.isfinite(qi) else False,
                }
            )
    return pa.Table.from_pylist(rows, schema=PROFILE_SCHEMA)


def compute_findings(
    con: duckdb.DuckDBPyConnection, *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> tuple[pa.Table, pa.Table]:
    """(findings, identity profiles) of a database with the aggregate stage's tables (``pairs``,
    ``embeddings``, ``counts``, ``compare``, ``occlusion``, ``atlas``, optional ``centre_baseline``)."""
    out = _Rows(seed, n_resamples)
    _cosine(con, out)
    _maps(con, out)
    _central(con, out)
    _occlusion(con, out)
    _atlas(con, out)
    profiles = _image_profiles(con)
    _profiles(out, profiles)
    log.info("findings: %d rows", len(out.rows))
    return pa.Table.from_pylist(out.rows, schema=FINDINGS_SCHEMA), identity_profiles(profiles)


def finding_rows(rows: Sequence[dict], finding: str) -> list[dict]:
    """The rows of one finding (helper for the report)."""
    return [r for r in rows if r["finding"] == finding]
