"""leam.outputs.findings on a tiny hand-made database: every effect recomputed by hand (per person first,
then the mean over people), controls and verdicts."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest

from leam.core.classes import CLASS_COLUMNS, CLASS_NAMES
from leam.core.stats import estimate
from leam.outputs.findings import compute_findings

NOSE = CLASS_NAMES.index("nose")
FACE = CLASS_NAMES.index("face")
EYE = CLASS_NAMES.index("right eye")
PEOPLE = {"ann": ["a1", "a2", "a3"], "bob": ["b1", "b2"], "cy": ["c1", "c2", "c3"], "dee": ["d1", "d2"]}


def _db() -> duckdb.DuckDBPyConnection:
    rng = np.random.default_rng(0)
    con = duckdb.connect()
    pairs, emb = [], []
    for ident, imgs in PEOPLE.items():
        base = rng.normal(size=8)
        for im in imgs:
            emb.append(("m", ident, im, list(base + rng.normal(scale=0.5, size=8))))
    e = {(i, im): np.array(v) for _, i, im, v in emb}

    def cos(x, y):
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    for ident, imgs in PEOPLE.items():
        for a, p in itertools.permutations(imgs, 2):
            pairs.append(("m", ident, a, p, cos(e[(ident, a)], e[(ident, p)])))
    con.execute("CREATE TABLE pairs (model VARCHAR, identity VARCHAR, anchor VARCHAR, positive VARCHAR, cosine DOUBLE)")
    con.executemany("INSERT INTO pairs VALUES (?, ?, ?, ?, ?)", pairs)
    con.execute("CREATE TABLE embeddings (model VARCHAR, identity VARCHAR, image VARCHAR, embedding DOUBLE[])")
    con.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?)", emb)
    # compare: two layers and the geometry baseline; same pairs within a person, a few different draws
    rows = []
    people = list(PEOPLE)
    for selection in ("top1", "geometry:top1"):
        for layer, li in (("l0", 0), ("l1", 1)):
            for ident, imgs in PEOPLE.items():
                for a, b in itertools.combinations(imgs, 2):
                    rows.append(
                        (
                            "m",
                            layer,
                            li,
                            selection,
                            "same",
                            ident,
                            a,
                            ident,
                            b,
                            rng.uniform(0.4, 0.8),
                            rng.uniform(2, 6),
                            None,
                        )
                    )
                other = people[(people.index(ident) + 1) % len(people)]
                for a in imgs:
                    rows.append(
                        (
                            "m",
                            layer,
                            li,
                            selection,
                            "different",
                            ident,
                            a,
                            other,
                            PEOPLE[other][0],
                            rng.uniform(0.1, 0.5),
                            rng.uniform(5, 9),
                            None,
                        )
                    )
    rows.append(("m", "l0", 0, "top1", "same", "ann", "a1", "ann", "a9", None, None, "all-zero map: ann/a9"))
    con.execute("""CREATE TABLE compare (model VARCHAR, layer VARCHAR, layer_idx SMALLINT, selection VARCHAR,
                   kind VARCHAR, identity_a VARCHAR, image_a VARCHAR, identity_b VARCHAR, image_b VARCHAR,
                   bc DOUBLE, emd DOUBLE,
                   skipped VARCHAR)""")
    con.executemany("INSERT INTO compare VALUES (" + ", ".join("?" * 12) + ")", rows)
    # counts: per map, top1 and full rows with nose / eye / face pixels
    cols = ", ".join(f"{c} BIGINT" for c in CLASS_COLUMNS)
    con.execute(f"""CREATE TABLE counts (model VARCHAR, layer VARCHAR, layer_idx SMALLINT, identity VARCHAR,
                    anchor VARCHAR, positive VARCHAR, selection VARCHAR, n_selected BIGINT, {cols})""")
    crow = []
    for ident, imgs in PEOPLE.items():
        for a, p in itertools.permutations(imgs, 2):
            for layer, li in (("l0", 0), ("l1", 1)):
                for selection, n in (("top1", 10), ("full", 1000)):
                    nose = int(rng.integers(0, n // 2))
                    eye = int(rng.integers(0, n // 4))
                    v = [0] * len(CLASS_COLUMNS)
                    v[NOSE], v[EYE], v[FACE] = nose, eye, n - nose - eye
                    crow.append(("m", layer, li, ident, a, p, selection, n, *v))
    con.executemany(f"INSERT INTO counts VALUES ({', '.join('?' * (8 + len(CLASS_COLUMNS)))})", crow)
    con.execute("""CREATE TABLE centre_baseline (identity VARCHAR, image VARCHAR, n_pixels BIGINT,
                   disc_central_pct DOUBLE, disc_nose_pct DOUBLE, gauss_central_pct DOUBLE, gauss_nose_pct DOUBLE)""")
    con.executemany(
        "INSERT INTO centre_baseline VALUES (?, ?, 10, ?, ?, 0, 0)",
        [(i, im, rng.uniform(60, 90), rng.uniform(20, 40)) for i, imgs in PEOPLE.items() for im in imgs],
    )
    # occlusion: sources m and n onto target m, leam and random per pair and size
    occ = []
    for ident, imgs in PEOPLE.items():
        for a, p in itertools.permutations(imgs, 2):
            for size in (1.0, 5.0):
                r = rng.uniform(0, 0.05)
                for src in ("m", "n"):
                    occ.append((src, "c1", "m", ident, a, p, "leam", size, rng.uniform(0.02, 0.2)))
                    occ.append((src, "c1", "m", ident, a, p, "random", size, r))
    occ.append(("m", "c1", "m", "ann", "a1", "a2", "leam", 10.0, None))  # a skipped row
    con.execute("""CREATE TABLE occlusion (source_model VARCHAR, source_layer VARCHAR, model VARCHAR, identity VARCHAR,
                   anchor VARCHAR, positive VARCHAR, method VARCHAR, size_pct DOUBLE, drop DOUBLE)""")
    con.executemany("INSERT INTO occlusion VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", occ)
    atl = [
        ("m", "c1", "m", 1.0, ident, im, method, rng.uniform(0, 0.1))
        for ident, imgs in PEOPLE.items()
        for im in imgs
        for method in ("own", "identity", "population", "random")
    ]
    con.execute("""CREATE TABLE atlas (source_model VARCHAR, source_layer VARCHAR, model VARCHAR, size_pct DOUBLE,
                   identity VARCHAR, image VARCHAR, method VARCHAR, drop DOUBLE)""")
    con.executemany("INSERT INTO atlas VALUES (?, ?, ?, ?, ?, ?, ?, ?)", atl)
    return con


def _row(df, **key):
    sel = df
    for k, v in key.items():
        sel = sel[sel[k].isna()] if v is None else sel[sel[k] == v]
    assert len(sel) == 1, (key, len(sel))
    return sel.iloc[0]


@pytest.fixture(scope="module")
def found():
    con = _db()
    table, profiles = compute_findings(con, seed=3, n_resamples=500)
    return con, table.to_pandas(), profiles.to_pandas()


def _check(row, d, direction, seed_free=True):
    """The row's effect is the mean of the hand-made per-person effects ``d``; its interval and
    verdict are leam.core.stats.estimate's of them (tested against oracles in test_stats)."""
    assert row.effect == pytest.approx(np.mean(d), abs=1e-12)
    assert row.n_identities == len(d)
    assert row.ci_low <= row.effect <= row.ci_high
    ref = estimate(d, direction, n_resamples=500, seed=0)
    assert row.p_value == pytest.approx(ref.p_value)  # exact sign flips: 2^4 patterns, no seed involved
    crosses = row.ci_low <= 0 <= row.ci_high or row.p_value >= 0.05
    assert row.verdict.startswith("not established with 4 people") == crosses


def test_cosine_is_per_person_same_minus_different(found):
    con, df, _ = found
    e = con.execute("SELECT identity, image, embedding FROM embeddings").df()
    vec = {(r.identity, r.image): np.asarray(r.embedding, float) for r in e.itertuples()}
    d = []
    for ident in sorted(PEOPLE):
        same = [
            float(vec[(ident, a)] @ vec[(ident, p)] / np.linalg.norm(vec[(ident, a)]) / np.linalg.norm(vec[(ident, p)]))
            for a, p in itertools.permutations(PEOPLE[ident], 2)
        ]
        diff = [
            float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
            for (i, _), x in vec.items()
            for (j, _), y in vec.items()
            if i == ident and j != ident
        ]
        d.append(np.mean(same) - np.mean(diff))
    r = _row(df, finding="cosine", model="m")
    _check(r, np.array(d), +1)
    assert r.n_a == sum(len(v) * (len(v) - 1) // 2 for v in PEOPLE.values())  # unordered photo pairs
    assert r.n_b == 10 * 9 // 2 - r.n_a


def test_maps_per_layer_pooled_and_above_the_geometry_baseline(found):
    con, df, _ = found
    c = con.execute("SELECT * FROM compare WHERE skipped IS NULL").df()

    def per_person(sel, layer, col):
        out = {}
        for ident in sorted(PEOPLE):
            s = c[(c.selection == sel) & (c.layer == layer) & (c.kind == "same") & (c.identity_a == ident)][col]
            dd = c[
                (c.selection == sel)
                & (c.layer == layer)
                & (c.kind == "different")
                & ((c.identity_a == ident) | (c.identity_b == ident))
            ][col]
            out[ident] = s.mean() - dd.mean()
        return pd.Series(out)

    for col, finding, direction in (("bc", "maps_bc", +1), ("emd", "maps_emd", -1)):
        geo = {layer: per_person("geometry:top1", layer, col) for layer in ("l0", "l1")}
        layers = {layer: per_person("top1", layer, col) for layer in ("l0", "l1")}
        for layer, d in layers.items():
            r = _row(df, finding=finding, model="m", layer=layer, selection="top1")
            _check(r, d.to_numpy(), direction)
            assert r.control_effect == pytest.approx(geo[layer].mean())
            assert r.excess == pytest.approx((d - geo[layer]).mean())
        pooled = (layers["l0"] + layers["l1"]) / 2
        r = _row(df, finding=finding, model="m", layer="all layers", selection="top1")
        _check(r, pooled.to_numpy(), direction)
        assert r.excess == pytest.approx((pooled - (geo["l0"] + geo["l1"]) / 2).mean())
        assert r.n_a == 2 * sum(len(v) * (len(v) - 1) // 2 for v in PEOPLE.values())  # the skipped pair is not counted
    assert not (df.selection.fillna("").str.startswith("geometry")).any()  # the control is no finding of its own


def test_central_share_and_the_centre_baseline(found):
    con, df, _ = found
    k = con.execute("SELECT * FROM counts").df()
    z = con.execute("SELECT * FROM centre_baseline").df().set_index(["identity", "image"])
    central = [
        CLASS_COLUMNS[CLASS_NAMES.index(n)] for n in ("nose", "right eye", "left eye", "right eyebrow", "left eyebrow")
    ]
    k["share"] = 100 * k[central].sum(axis=1) / k.n_selected
    t = k[k.selection == "top1"].set_index(["layer", "anchor", "positive"])
    f = k[k.selection == "full"].set_index(["layer", "anchor", "positive"])
    t = t.assign(
        all=f["share"],
        centre=[
            z.loc[(i, a), "disc_central_pct"] for i, a in zip(t.identity, t.index.get_level_values(1), strict=True)
        ],
    )
    per = t.groupby("identity").agg(top=("share", "mean"), all=("all", "mean"), centre=("centre", "mean"))
    r = _row(df, finding="central", model="m", layer="all layers")
    _check(r, (per.top - per["all"]).to_numpy(), +1)
    assert r.a_mean == pytest.approx(per.top.mean()) and r.b_mean == pytest.approx(per["all"].mean())
    assert r.control_effect == pytest.approx((per.centre - per["all"]).mean())
    assert r.excess == pytest.approx((per.top - per.centre).mean())


def test_occlusion_cells_transfer_and_atlas(found):
    con, df, _ = found
    o = con.execute("SELECT * FROM occlusion WHERE drop IS NOT NULL").df()
    key = ["identity", "anchor", "positive"]
    for src in ("m", "n"):
        lm = o[(o.source_model == src) & (o.method == "leam") & (o.size_pct == 1)].set_index(key)["drop"]
        rd = o[(o.source_model == src) & (o.method == "random") & (o.size_pct == 1)].set_index(key)["drop"]
        d = (lm - rd).groupby("identity").mean()
        r = _row(df, finding="occlusion", model="m", source_model=src, size_pct=1.0)
        _check(r, d.to_numpy(), +1)
        assert r.cell == ("self" if src == "m" else "transfer")
    own = o[(o.source_model == "m") & (o.method == "leam") & (o.size_pct == 5)].set_index(key)["drop"]
    other = o[(o.source_model == "n") & (o.method == "leam") & (o.size_pct == 5)].set_index(key)["drop"]
    r = _row(df, finding="transfer", model="m", size_pct=5.0)
    _check(r, (own - other).groupby("identity").mean().to_numpy(), +1)
    a = (
        con.execute("SELECT * FROM atlas")
        .df()
        .pivot_table(index=["identity", "image"], columns="method", values="drop")
    )
    r = _row(df, finding="atlas_identity", model="m", size_pct=1.0)
    _check(r, (a["identity"] - a["population"]).groupby("identity").mean().to_numpy(), +1)
    assert r.source_model == "m"


def test_profiles_and_identity_deviation(found):
    _, df, prof = found
    r = _row(df, finding="profiles", model="m")
    assert r.n_identities == 4 and r.n_a == 10 and 0 < r.p_value <= 1
    assert set(prof["class"]) == {"face", "nose", "right eye"}  # classes no photo has are left out
    nose = prof[(prof["class"] == "nose")].set_index("identity")
    assert nose.deviation.to_numpy() == pytest.approx((nose.identity_pct - nose.others_pct).to_numpy())


@pytest.mark.pipeline
def test_a_study_of_four_people_renders_and_says_not_established_where_the_interval_crosses_0(tmp_path):
    """Bar 3 of #14: a folder of 4 people x 2-3 photos as one's own photos, one model: the report
    renders; every finding whose interval contains 0 (or whose sign-flip test cannot rule out chance)
    says 'not established with 4 people', and the report shows the findings view's numbers."""

    from conftest import johns_study, snakemake

    from leam.outputs.report import _ci

    d = tmp_path / "run"
    johns_study(d, {"John_Salley": 2, "John_Savage": 3, "John_Schneider": 2, "John_Simm": 3})
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (d / "results/default/report.html").read_text()
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    rows = con.execute("SELECT * FROM findings").df()
    with_ci = rows[rows.ci_low.notna()]
    assert len(with_ci) > 20 and (with_ci.n_identities == 4).all()
    crosses = ((with_ci.ci_low <= 0) & (with_ci.ci_high >= 0)) | (with_ci.p_value >= 0.05)
    assert crosses.any()
    assert (with_ci[crosses].verdict == "not established with 4 people").all()
    assert with_ci[~crosses].verdict.isin(["holds", "reversed"]).all()
    assert "not established with 4 people" in html
    # the report's findings tables are the view's numbers
    shown = rows[
        (rows.finding == "cosine")
        | ((rows.finding.isin(["maps_bc", "maps_emd"])) & (rows.layer == "all layers") & (rows.selection == "top1"))
        | ((rows.finding == "occlusion") & (rows.size_pct == 1))
        | ((rows.finding == "atlas_identity") & (rows.size_pct == 1))
    ]
    assert len(shown) >= 5
    for r in shown.itertuples():
        digits = 4 if r.finding in ("cosine", "occlusion", "atlas_identity") else 3
        assert _ci(r.effect, r.ci_low, r.ci_high, digits) in html, (r.finding, r.effect)
    for section in ("finding-cosine", "finding-maps", "finding-central", "finding-occlusion", "finding-person"):
        assert f"id='{section}'" in html
    assert html.index("id='findings'") < html.index("id='figures'")  # findings come first


@pytest.mark.pipeline
def test_a_study_without_a_comparable_pair_ends_with_a_report_that_says_why(tmp_path):
    """#21 case 5: one photo per person (nobody with two usable photos) crashed study_figures
    ('zip() argument 2 is shorter than argument 1') and the threshold figure; no report."""

    from conftest import johns_study, snakemake

    d = tmp_path / "run"
    johns_study(d, {"John_Salley": 1, "John_Savage": 1, "John_Simm": 1})
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (d / "results/default/report.html").read_text()
    assert "No finding can be measured in this run: 0 people have two or more usable photos" in html
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM findings").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM unpaired_identities").fetchone()[0] == 3
