"""Compare, occlusion, atlas and demographic outputs: stage functions and DuckDB views by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import stage_options
from scipy.stats import mannwhitneyu

from leam.core.counting import select
from leam.core.io import read_parquet, write_parquet
from leam.core.maps import to_frame
from leam.core.paper import LEVELS
from leam.core.tables import ATLAS_SCHEMA, COMPARE_SCHEMA, OCCLUSION_SCHEMA
from leam.outputs.demographics import fgnet_age, group_tests, read_ages
from leam.stages.compare import compare_model
from leam.stages.extract import MAPS_SCHEMA


def _maps_table(rng, identities: dict[str, list[str]], layers=("conv1", "l2"), shape=(6, 6)) -> pa.Table:
    rows = []
    for li, layer in enumerate(layers):
        for ident, imgs in identities.items():
            for a in imgs:
                for p in imgs:
                    if a != p:
                        m = (rng.random(shape) ** 4).astype("<f4")
                        rows.append(
                            {
                                "model": "m",
                                "layer": layer,
                                "layer_idx": li,
                                "identity": ident,
                                "anchor": a,
                                "positive": p,
                                "height": shape[0],
                                "width": shape[1],
                                "map": m.tobytes(),
                            }
                        )
    return pa.Table.from_pylist(rows, schema=MAPS_SCHEMA)


def _image_distribution(maps: pa.Table, layer, ident, image, size, selection):
    """By hand: mean over positives of the selected, normalised frame maps, each summing to 1."""
    dists = []
    for r in maps.to_pylist():
        if r["layer"] == layer and r["identity"] == ident and r["anchor"] == image:
            raw = np.frombuffer(r["map"], "<f4").reshape(r["height"], r["width"]).astype(np.float64)
            f = to_frame(torch.from_numpy(raw)[None], size)[0].numpy().ravel()
            active = f >= 0.01
            if selection == "full":
                keep = active
            else:
                k = int(np.ceil(active.sum() / 100))  # top 1 % of the activated pixels, rounded up
                keep = np.zeros_like(active)
                keep[np.argsort(-f, kind="stable")[:k]] = True
            d = np.where(keep, f, 0)
            dists.append(d / d.sum())
    return np.mean(dists, axis=0).reshape(size, size)


def _image_maps_files(tmp_path, maps: pa.Table, size: int, selections) -> list[str]:
    """The extract job's image maps of a raw-maps table (one file per identity, as shards would be)."""
    from leam.core.summaries import IdentitySummaries

    paths = []
    rows = maps.to_pylist()
    layers = sorted({(r["layer_idx"], r["layer"]) for r in rows})
    for ident in sorted({r["identity"] for r in rows}):
        imgs = sorted({r["anchor"] for r in rows if r["identity"] == ident})
        summ = IdentitySummaries(
            torch.zeros(len(imgs), size, size, dtype=torch.long),
            (0, 0, size, size),
            levels=LEVELS,
            full_threshold=0.01,
            topk_of="active",
            selections=selections,
            store_maps="raw",
        )
        for _, layer in layers:
            mine = [r for r in rows if r["identity"] == ident and r["layer"] == layer]
            raw = torch.from_numpy(
                np.stack([np.frombuffer(r["map"], "<f4").reshape(r["height"], r["width"]) for r in mine])
            )
            summ.add(
                layer,
                torch.tensor([imgs.index(r["anchor"]) for r in mine]),
                torch.tensor([imgs.index(r["positive"]) for r in mine]),
                raw,
            )
        path = tmp_path / f"image_maps_{ident}.parquet"
        write_parquet(
            summ.image_maps_table({"model": "m", "identity": ident}, [name for _, name in layers], imgs), path
        )
        paths.append(str(path))
    return paths


def test_compare_stage_by_hand(tmp_path):
    import ot

    rng = np.random.default_rng(0)
    maps = _maps_table(rng, {"x": ["a", "b", "c"], "y": ["d", "e"]})
    files = _image_maps_files(tmp_path, maps, 16, ("top1", "full"))
    assert compare_model(
        files,
        tmp_path / "c.parquet",
        options=stage_options(
            "compare", model="m", size=16, selections=("top1", "full"), grid=8, different_per_image=2, seed=0, batch=3
        ),
    ) == 2 * 2 * (4 + 10)
    table = read_parquet(tmp_path / "c.parquet")
    assert table.schema == COMPARE_SCHEMA
    df = table.to_pandas()
    # same identity: every unordered pair within x (3) and y (1); different: 2 per image (5 images)
    for _, g in df.groupby(["layer", "selection"]):
        assert (g["kind"] == "same").sum() == 4 and (g["kind"] == "different").sum() == 10
        assert (g.loc[g["kind"] == "same", "identity_a"] == g.loc[g["kind"] == "same", "identity_b"]).all()
        assert (g.loc[g["kind"] == "different", "identity_a"] != g.loc[g["kind"] == "different", "identity_b"]).all()
    centres = (np.arange(8) + 0.5) * 16 / 8
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    cost = ot.dist(np.stack([xx.ravel(), yy.ravel()], 1), metric="euclidean")
    for r in df.sample(8, random_state=0).itertuples():
        p = _image_distribution(maps, r.layer, r.identity_a, r.image_a, 16, r.selection)
        q = _image_distribution(maps, r.layer, r.identity_b, r.image_b, 16, r.selection)
        assert r.bc == pytest.approx(np.sqrt(p * q).sum(), rel=1e-6)  # image maps are stored as float32
        pc = p.reshape(8, 2, 8, 2).mean((1, 3))
        qc = q.reshape(8, 2, 8, 2).mean((1, 3))
        assert r.emd == pytest.approx(ot.emd2(pc.ravel() / pc.sum(), qc.ravel() / qc.sum(), cost), rel=1e-5)
    # deterministic: the seed fixes the different-identity draws; the batch size changes nothing
    compare_model(
        files[::-1],
        tmp_path / "c2.parquet",
        options=stage_options(
            "compare", model="m", size=16, selections=("top1", "full"), grid=8, different_per_image=2, seed=0
        ),
    )
    assert read_parquet(tmp_path / "c2.parquet").equals(table)


def test_emd_grid_0_is_the_exact_emd_at_full_resolution(tmp_path):
    """compare.emd_grid 0: EMD on the maps' supports, equal to POT's EMD on every frame pixel."""
    import ot

    rng = np.random.default_rng(1)
    maps = _maps_table(rng, {"x": ["a", "b", "c"], "y": ["d", "e"]})
    files = _image_maps_files(tmp_path, maps, 16, ("top1",))
    compare_model(
        files,
        tmp_path / "c.parquet",
        options=stage_options(
            "compare", model="m", size=16, selections=("top1",), grid=0, different_per_image=2, seed=0
        ),
    )
    df = read_parquet(tmp_path / "c.parquet").to_pandas()
    yy, xx = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    cost = ot.dist(np.stack([xx.ravel(), yy.ravel()], 1), metric="euclidean")
    for r in df.itertuples():
        p = _image_distribution(maps, r.layer, r.identity_a, r.image_a, 16, r.selection)
        q = _image_distribution(maps, r.layer, r.identity_b, r.image_b, 16, r.selection)
        want = ot.emd2(p.ravel() / p.sum(), q.ravel() / q.sum(), cost, numItermax=10**6)
        assert r.emd == pytest.approx(want, rel=1e-5)


def test_all_zero_maps_are_recorded_as_skipped_not_a_crash(tmp_path):
    """#12 case 8: deep layers give all-zero maps; compare used to fail inside POT's emd2 (NaN sums)."""
    import duckdb

    from leam.stages.aggregate import create_analysis_views

    rng = np.random.default_rng(3)
    maps = _maps_table(rng, {"x": ["a", "b", "c"], "y": ["d", "e"]}).to_pylist()
    for r in maps:
        if r["anchor"] == "c" or r["layer"] == "l2":  # c's maps of every layer; every map of layer l2
            r["map"] = np.zeros((6, 6), "<f4").tobytes()
    files = _image_maps_files(tmp_path, pa.Table.from_pylist(maps, schema=MAPS_SCHEMA), 16, ("top1",))
    n = compare_model(
        files,
        tmp_path / "c.parquet",
        options=stage_options(
            "compare", model="m", size=16, selections=("top1",), grid=8, different_per_image=2, seed=0
        ),
    )
    df = read_parquet(tmp_path / "c.parquet").to_pandas()
    assert n == len(df) == 2 * (4 + 10)
    with_c = (df["image_a"] == "c") | (df["image_b"] == "c")
    skipped = (df["layer"] == "l2") | with_c
    assert df.loc[skipped, ["bc", "emd"]].isna().all().all()
    assert df.loc[~skipped, ["bc", "emd"]].notna().all().all() and (~skipped).sum() > 0
    assert (df.loc[skipped, "skipped"].str.startswith("all-zero map: ")).all() and df.loc[
        ~skipped, "skipped"
    ].isna().all()
    assert set(df.loc[with_c & (df["layer"] == "conv1"), "skipped"]) == {"all-zero map: x/c"}
    con = duckdb.connect()
    compare = read_parquet(tmp_path / "c.parquet")  # noqa: F841 (DuckDB reads the local)
    con.execute("CREATE TABLE compare AS SELECT * FROM compare")
    for name, schema in (("occlusion", OCCLUSION_SCHEMA), ("atlas", ATLAS_SCHEMA)):
        empty = schema.empty_table()  # noqa: F841
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM empty")
    create_analysis_views(con)
    got = {
        (r[0], r[1]): r[2:]
        for r in con.execute(
            "SELECT layer, kind, n_pairs, n_skipped FROM compare_summary WHERE selection = 'top1'"
        ).fetchall()
    }
    for (layer, kind), (n_pairs, n_skipped) in got.items():
        g = df[(df["layer"] == layer) & (df["kind"] == kind)]
        assert (n_pairs, n_skipped) == (g["bc"].notna().sum(), g["skipped"].notna().sum())
    assert got[("l2", "same")] == (0, 4)


def test_selection_keeps_the_top_pixels():
    f = torch.tensor([[[0.9, 0.5, 0.005], [0.5, 0.2, 0.0]]], dtype=torch.float64)
    assert select(f, "full").tolist() == [[[0.9, 0.5, 0.0], [0.5, 0.2, 0.0]]]
    # 4 activated pixels; top 50 % keeps 2: the 0.9 and the first 0.5 (ties by index)
    assert select(f, "top50").tolist() == [[[0.9, 0.5, 0.0], [0.0, 0.0, 0.0]]]


def test_fgnet_names():
    assert fgnet_age("001A02.JPG") == ("001", 2)
    assert fgnet_age("082A18a.jpg") == ("082", 18)
    assert fgnet_age("obama.jpg") is None
    ages = read_ages("fgnet", [("001", "001A02.JPG"), ("001", "001A10.JPG"), ("x", "photo.jpg")])
    assert ages.to_dict("records") == [
        {"identity": "001", "image": "001A02.JPG", "age": 2},
        {"identity": "001", "image": "001A10.JPG", "age": 10},
    ]


def test_group_tests_equal_scipy():
    rng = np.random.default_rng(1)
    drops = pd.DataFrame(
        {
            "gender": rng.choice(["female", "male"], 60),
            "method": rng.choice(["leam", "random"], 60),
            "size_pct": 1.0,
            "drop": rng.normal(0.1, 0.05, 60),
        }
    )
    got = group_tests(drops, "gender")
    assert len(got) == 2
    for r in got.itertuples():
        g = drops[drops["method"] == r.method]
        a, b = g.loc[g["gender"] == r.group_a, "drop"], g.loc[g["gender"] == r.group_b, "drop"]
        ref = mannwhitneyu(a, b, alternative="two-sided")
        assert (r.u, r.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
        assert (r.n_a, r.n_b) == (len(a), len(b))


def _write(rows, schema, path):
    from leam.core.io import write_parquet

    write_parquet(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


@pytest.fixture(scope="module")
def analysis_db(tmp_path_factory):
    """A database with random compare / occlusion / atlas rows and demographic metadata."""
    import duckdb

    from leam.core.tables import ALIGNED_SCHEMA, COUNTS_SCHEMA, EMBEDDINGS_SCHEMA, FACES_SCHEMA, PAIRS_SCHEMA
    from leam.stages.aggregate import AggregateInputs, build_database

    tmp = tmp_path_factory.mktemp("analysis")
    rng = np.random.default_rng(7)
    idents = {"ann": ["a1", "a2", "a3"], "bob": ["b1", "b2"], "cy": ["c1", "c2", "c3"]}
    comp = [
        {
            "model": m,
            "layer": layer,
            "layer_idx": li,
            "selection": s,
            "kind": k,
            "identity_a": "ann",
            "image_a": "a1",
            "identity_b": "bob" if k == "different" else "ann",
            "image_b": "b1",
            "bc": float(rng.random()),
            "emd": float(rng.random() * 30),
        }
        for m in ("m1", "m2")
        for li, layer in enumerate(("conv1", "l2"))
        for s in ("top1", "full")
        for k in ("same", "different")
        for _ in range(int(rng.integers(1, 4)))
    ]
    occ = [
        {
            "source_model": "m1",
            "source_layer": "conv1",
            "model": m,
            "identity": i,
            "anchor": a,
            "positive": p,
            "method": meth,
            "size_pct": size,
            "n_occluded": 3,
            "cosine_before": cb,
            "cosine_after": cb - d,
            "drop": d,
        }
        for m in ("m1", "m2")
        for i, imgs in idents.items()
        for a in imgs
        for p in imgs
        if a != p
        for meth in ("leam", "random")
        for size in (1.0, 5.0)
        for cb, d in [(float(rng.uniform(0.5, 0.9)), float(rng.normal(0.05, 0.03)))]
    ]
    atl = [
        {
            "source_model": "m1",
            "source_layer": "conv1",
            "model": m,
            "identity": i,
            "image": h,
            "method": meth,
            "size_pct": size,
            "n_occluded": 3,
            "n_positives": len(imgs) - 1,
            "drop": float(rng.normal(0.04, 0.02)),
        }
        for m in ("m1",)
        for i, imgs in idents.items()
        for h in imgs
        for meth in ("own", "identity", "population", "random")
        for size in (1.0, 5.0)
    ]
    faces = [
        {
            "identity": i,
            "image": im,
            "path": f"{i}/{im}",
            "bytes": 1,
            "sha256": "x",
            "width": 1,
            "height": 1,
            "source_mode": "RGB",
            "notes": "",
            "n_faces": 1,
            "box_left": 0,
            "box_top": 0,
            "box_right": 1,
            "box_bottom": 1,
            "score": 1.0,
            "landmarks": [0.0] * 136,
            "status": "ok",
            "reason": "",
            "duplicate_of": None,
        }
        for i, imgs in idents.items()
        for im in imgs
    ]
    (tmp / "ids.csv").write_text("identity,gender,ethnicity\nann,female,A\nbob,male,B\ncy,female,B\n")
    (tmp / "ages.csv").write_text(
        "identity,image,age\n"
        + "".join(f"{i},{im},{20 + 7 * k}\n" for i, imgs in idents.items() for k, im in enumerate(imgs))
    )
    db = tmp / "db.duckdb"
    build_database(
        db,
        inputs=AggregateInputs(
            counts=[_write([], COUNTS_SCHEMA, tmp / "c.parquet")],
            pairs=[_write([], PAIRS_SCHEMA, tmp / "p.parquet")],
            embeddings=[_write([], EMBEDDINGS_SCHEMA, tmp / "e.parquet")],
            faces=[_write(faces, FACES_SCHEMA, tmp / "f.parquet")],
            aligned=[_write([], ALIGNED_SCHEMA, tmp / "a.parquet")],
            compare=[_write(comp, COMPARE_SCHEMA, tmp / "cmp.parquet")],
            occlusion=[_write(occ, OCCLUSION_SCHEMA, tmp / "o.parquet")],
            atlas=[_write(atl, ATLAS_SCHEMA, tmp / "at.parquet")],
        ),
        options=stage_options(
            "aggregate",
            models={"m1": {"layers": {"conv1": "conv1"}}},
            levels=[1, 100],
            metadata={"identities": str(tmp / "ids.csv"), "ages": str(tmp / "ages.csv")},
        ),
    )
    con = duckdb.connect(str(db), read_only=True)
    yield con, pd.DataFrame(comp), pd.DataFrame(occ), pd.DataFrame(atl), idents
    con.close()


def _close(view: pd.DataFrame, hand: pd.DataFrame, keys: list[str], cols: list[str]):
    m = view.merge(hand, on=keys, how="outer", suffixes=("_v", "_h"), indicator=True)
    assert (m["_merge"] == "both").all() and len(m) == len(hand) == len(view)
    for c in cols:
        np.testing.assert_allclose(m[f"{c}_v"].astype(float), m[f"{c}_h"].astype(float), rtol=1e-12, equal_nan=True)


def test_compare_views_by_hand(analysis_db):
    con, comp, *_ = analysis_db
    hand = (
        comp.groupby(["model", "layer", "selection", "kind"])
        .agg(n_pairs=("bc", "size"), mean_bc=("bc", "mean"), mean_emd=("emd", "mean"))
        .reset_index()
    )
    _close(
        con.execute("SELECT * FROM compare_summary").df()[
            ["model", "layer", "selection", "kind", "n_pairs", "mean_bc", "mean_emd"]
        ],
        hand,
        ["model", "layer", "selection", "kind"],
        ["n_pairs", "mean_bc", "mean_emd"],
    )
    wide = hand.pivot(index=["model", "layer", "selection"], columns="kind", values=["mean_bc", "mean_emd"])
    wide.columns = [f"{'bc' if a == 'mean_bc' else 'emd'}_{k}" for a, k in wide.columns]
    view = con.execute(
        "SELECT model, layer, selection, bc_same, bc_different, emd_same, emd_different FROM compare_table"
    ).df()
    _close(
        view,
        wide.reset_index(),
        ["model", "layer", "selection"],
        ["bc_same", "bc_different", "emd_same", "emd_different"],
    )


def test_occlusion_and_atlas_views_by_hand(analysis_db):
    con, _, occ, atl, _ = analysis_db
    t9 = occ.pivot_table(index=["model", "size_pct"], columns="method", values="drop", aggfunc="mean").reset_index()
    view = con.execute("SELECT model, size_pct, leam_drop AS leam, random_drop AS random FROM occlusion_table").df()
    _close(view, t9, ["model", "size_pct"], ["leam", "random"])  # one row per target model, never pooled
    # rows come back in a stable, documented order (#13: it used to be 0.01, 0.1, 0.25, 1.5, 10, 0.05)
    assert list(zip(view["model"], view["size_pct"], strict=True)) == sorted(
        zip(view["model"], view["size_pct"], strict=True)
    )
    per_model = (
        occ.groupby(["model", "method", "size_pct"])
        .agg(n_pairs=("drop", "size"), mean_drop=("drop", "mean"))
        .reset_index()
    )
    _close(
        con.execute("SELECT model, method, size_pct, n_pairs, mean_drop FROM occlusion_by_model").df(),
        per_model,
        ["model", "method", "size_pct"],
        ["n_pairs", "mean_drop"],
    )
    at = (
        atl.groupby(["model", "method", "size_pct"])
        .agg(n_images=("drop", "size"), mean_drop=("drop", "mean"))
        .reset_index()
    )
    _close(
        con.execute("SELECT model, method, size_pct, n_images, mean_drop FROM atlas_summary").df(),
        at,
        ["model", "method", "size_pct"],
        ["n_images", "mean_drop"],
    )


def test_demographic_views_by_hand(analysis_db):
    con, _, occ, _, idents = analysis_db
    meta = pd.DataFrame(
        {"identity": ["ann", "bob", "cy"], "gender": ["female", "male", "female"], "ethnicity": ["A", "B", "B"]}
    )
    o = occ.merge(meta, on="identity")
    for factor in ("gender", "ethnicity"):
        hand = (
            o.groupby([factor, "model", "method", "size_pct"])
            .agg(n_pairs=("drop", "size"), mean_drop=("drop", "mean"))
            .reset_index()
        )
        hand = hand.rename(columns={factor: "grp"})
        view = con.execute(
            "SELECT grp, model, method, size_pct, n_pairs, mean_drop FROM occlusion_by_group WHERE factor = ?", [factor]
        ).df()
        _close(view, hand, ["grp", "model", "method", "size_pct"], ["n_pairs", "mean_drop"])
        tests = con.execute("SELECT * FROM demographic_tests WHERE factor = ?", [factor]).df()
        for r in tests.itertuples():
            g = o[(o["method"] == r.method) & (o["size_pct"] == r.size_pct)]
            ref = mannwhitneyu(
                g.loc[g[factor] == r.group_a, "drop"], g.loc[g[factor] == r.group_b, "drop"], alternative="two-sided"
            )
            assert (r.u, r.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    ages = {(i, im): 20 + 7 * k for i, imgs in idents.items() for k, im in enumerate(imgs)}
    occ = occ.assign(
        age_gap=[
            abs(ages[(i, a)] - ages[(i, p)])
            for i, a, p in zip(occ["identity"], occ["anchor"], occ["positive"], strict=True)
        ]
    )
    hand = (
        occ.groupby(["model", "method", "size_pct", "age_gap"])
        .agg(n_pairs=("drop", "size"), mean_drop=("drop", "mean"))
        .reset_index()
    )
    view = con.execute("SELECT model, method, size_pct, age_gap, n_pairs, mean_drop FROM occlusion_by_age_gap").df()
    _close(view, hand, ["model", "method", "size_pct", "age_gap"], ["n_pairs", "mean_drop"])


def test_every_view_and_column_is_documented_and_sorted(analysis_db):
    """#13: COMMENT ON every view and each of its columns; ORDER BY in every view."""
    from leam.outputs.catalog import undocumented

    con, *_ = analysis_db
    assert undocumented(con) == []
    views = [v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    assert len(views) >= 20
    for v in views:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [v]).fetchone()[0]
        assert "ORDER BY" in sql.upper(), v


def test_pivot_columns_need_no_quoting():
    from leam.stages.aggregate import safe_names

    assert safe_names(["conv1", "l1_0.conv1", "l1_0-conv1", "2a", "L1_0_CONV1"]) == {
        "conv1": "conv1",
        "l1_0.conv1": "l1_0_conv1",
        "l1_0-conv1": "l1_0_conv1_2",
        "2a": "x2a",
        "L1_0_CONV1": "l1_0_conv1_3",
    }


def test_a_run_without_top1_shows_its_own_selection(tmp_path, monkeypatch):
    """#21 case 6: with compare.selections [full, top5] the compare figure said "no map comparisons"
    beside the rows the run had: figure and report now show the first selection compared."""
    import duckdb

    from leam.outputs import plots
    from leam.outputs.report import _main_selection
    from leam.stages.aggregate import create_analysis_views

    rng = np.random.default_rng(5)
    maps = _maps_table(rng, {"x": ["a", "b", "c"], "y": ["d", "e"]})
    files = _image_maps_files(tmp_path, maps, 16, ("top5", "full"))
    compare_model(
        files,
        tmp_path / "c.parquet",
        options=stage_options(
            "compare", model="m", size=16, selections=("top5", "full"), grid=8, different_per_image=2
        ),
    )
    db = tmp_path / "t.duckdb"
    con = duckdb.connect(str(db))
    compare = read_parquet(tmp_path / "c.parquet")  # noqa: F841 (DuckDB reads the local)
    con.execute("CREATE TABLE compare AS SELECT * FROM compare")
    for name, schema in (("occlusion", OCCLUSION_SCHEMA), ("atlas", ATLAS_SCHEMA)):
        empty = schema.empty_table()  # noqa: F841
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM empty")
    create_analysis_views(con)
    assert _main_selection(con) == "full"
    con.close()
    said = []
    monkeypatch.setattr(plots, "_empty", lambda ax, text: said.append(text))
    plots.compare_figure(db, tmp_path / "compare.png")
    assert said == [] and (tmp_path / "compare.png").stat().st_size > 0
