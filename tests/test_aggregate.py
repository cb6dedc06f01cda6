"""Aggregate stage: every DuckDB view recomputed by hand (numpy/pandas) on tiny hand-made inputs.

The hand computations follow the definitions of the ``leam.stages.aggregate`` docstring, not its SQL:

* ``abs_pct`` = 100 pixels / n_pixels, ``rel_pct`` = 100 pixels / n_selected (NULL if n_selected = 0);
* mean shares are means of per-map shares (NULLs ignored), pooled shares are shares of summed pixels;
* ``identity_variation``: sample std (ddof = 1), mean, min, max, CV = 100 std / mean;
* ``cosine_same``: the same-identity pairs (n: unordered); ``cosine_different``: every unordered pair of
  images of different identities within a model.

Two databases: a seeded random one (2 models x 2 layers, 2 identities with 3 and 2 images, a
parser with absent classes, empty selections) compared view by view with the hand computation,
and a trivial one whose every value is known in closed form.
"""

from __future__ import annotations

import itertools
import math

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import stage_options

from leam.core.classes import CLASS_COLUMNS, CLASSES, N_CLASSES, visible_classes
from leam.core.selection import selection_names
from leam.core.tables import ALIGNED_SCHEMA, COUNTS_SCHEMA, EMBEDDINGS_SCHEMA, FACES_SCHEMA, PAIRS_SCHEMA
from leam.stages.aggregate import AggregateInputs, build_database, level_column

LEVELS = [1, 100]
SELECTIONS = selection_names(LEVELS)  # ["full", "top1", "top100"]
LEVEL_OF = {"full": None, "top1": 1.0, "top100": 100.0}
N_PIXELS = 100
# frames of two sizes, so that pooled and mean absolute shares differ when layers are pooled
N_PIXELS_OF_LAYER = (100, 144)
CLASS_NAME = {i: name for i, _, name in CLASSES}
NO_LEVEL = -1.0  # stands for the NULL level of "full" in merge keys

MODELS = {
    "m1": {"layers": {"conv1": "conv1", "l1": "layer1.0.conv1"}},
    "m2": {"layers": {"conv1": "features.0", "l4": "layer4.1.conv2"}},
}
PARSER_OF = {"m1": "farl", "m2": "landmarks"}
IMAGES = {"alice": ["a1", "a2", "a3"], "bob": ["b1", "b2"]}  # 6 + 2 ordered pairs
SINGLE = {"carol": ["c1"]}  # embedded, but no pair (one image)
RTOL = 1e-12
ATOL = 1e-12  # only matters for values that are exactly 0 by hand


# ----------------------------------------------------------------------------- input writers


def _write(rows: list[dict], schema: pa.Schema, path) -> str:
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    pq.write_table(pa.table(cols, schema=schema), path)
    return str(path)


def _face_row(identity, image, status, reason=None, duplicate_of=None) -> dict:
    return {
        "identity": identity,
        "image": image,
        "path": f"raw/{identity}/{image}.jpg",
        "bytes": 1234,
        "sha256": f"sha-{identity}-{image}",
        "width": 64,
        "height": 64,
        "source_mode": "RGB",
        "n_faces": 1 if status == "ok" else 0,
        "status": status,
        "reason": reason,
        "duplicate_of": duplicate_of,
        "landmarks": [float(i) for i in range(136)] if status == "ok" else None,
    }


def _aligned_row(identity, image, reference) -> dict:
    return {
        "identity": identity,
        "image": image,
        "reference": reference,
        "is_reference": image == reference,
        "size": 10,
        "frame_png": b"",
        "landmarks": [0.5] * 136,
        "image_to_frame": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "align_rmse": 0.25,
    }


def _count_row(
    model,
    layer,
    layer_idx,
    identity,
    anchor,
    positive,
    selection,
    pixels: dict[int, int],
    n_selected,
    n_pixels=N_PIXELS,
) -> dict:
    """``pixels``: class id -> count for the visible classes; the other class columns are NULL."""
    row = {
        "model": model,
        "layer": layer,
        "layer_idx": layer_idx,
        "identity": identity,
        "anchor": anchor,
        "positive": positive,
        "parser": PARSER_OF.get(model, "landmarks"),
        "selection": selection,
        "level": LEVEL_OF[selection],
        "n_selected": n_selected,
        "n_pixels": n_pixels,
    }
    for c, col in enumerate(CLASS_COLUMNS):
        row[col] = pixels.get(c)
    return row


def _cos(u, v) -> float:
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _ordered_pairs(images):
    return [(a, p) for a in images for p in images if a != p]


# ----------------------------------------------------------------------------- random fixture


def _random_inputs(tmp_path):
    rng = np.random.default_rng(20240611)
    counts_rows: dict[str, list[dict]] = {m: [] for m in MODELS}
    for model, spec in MODELS.items():
        visible = visible_classes(PARSER_OF[model])
        for layer_idx, layer in enumerate(spec["layers"]):
            for identity, images in IMAGES.items():
                for anchor, positive in _ordered_pairs(images):
                    for selection in SELECTIONS:
                        empty = (
                            # one single empty selection ...
                            (model, layer, identity, anchor, positive, selection)
                            == ("m1", "conv1", "alice", "a1", "a2", "top1")
                            # ... and a whole (model, layer, selection) group that is empty
                            or (model, layer, selection) == ("m2", "l4", "top1")
                        )
                        if empty:
                            pixels = {c: 0 for c in visible}
                        else:
                            pixels = {c: int(rng.integers(0, 6)) for c in visible}  # sum <= 95 < n_pixels
                            if sum(pixels.values()) == 0:
                                pixels[visible[0]] = 1
                        counts_rows[model].append(
                            _count_row(
                                model,
                                layer,
                                layer_idx,
                                identity,
                                anchor,
                                positive,
                                selection,
                                pixels,
                                sum(pixels.values()),
                                n_pixels=N_PIXELS_OF_LAYER[layer_idx],
                            )
                        )
    counts = [_write(rows, COUNTS_SCHEMA, tmp_path / f"counts_{m}.parquet") for m, rows in counts_rows.items()]

    dim = 8
    bases = {name: rng.normal(size=dim) for name in [*IMAGES, *SINGLE]}
    emb_rows, pair_rows, emb = [], [], {}
    for model in MODELS:
        for identity, images in {**IMAGES, **SINGLE}.items():
            for image in images:
                vec = (bases[identity] + 0.1 * rng.normal(size=dim)).astype(np.float32)
                emb[(model, identity, image)] = vec
                emb_rows.append({"model": model, "identity": identity, "image": image, "embedding": vec.tolist()})
        for identity, images in IMAGES.items():
            for anchor, positive in _ordered_pairs(images):
                pair_rows.append(
                    {
                        "model": model,
                        "identity": identity,
                        "anchor": anchor,
                        "positive": positive,
                        "cosine": _cos(emb[(model, identity, anchor)], emb[(model, identity, positive)]),
                    }
                )
    # split over two files per table, as the pipeline writes one per shard
    pairs = [
        _write([r for r in pair_rows if r["model"] == m], PAIRS_SCHEMA, tmp_path / f"pairs_{m}.parquet") for m in MODELS
    ]
    embeddings = [
        _write([r for r in emb_rows if r["model"] == m], EMBEDDINGS_SCHEMA, tmp_path / f"emb_{m}.parquet")
        for m in MODELS
    ]

    face_rows = [_face_row(i, im, "ok") for i, ims in {**IMAGES, **SINGLE}.items() for im in ims]
    face_rows += [
        _face_row("alice", "a4", "rejected", reason="no face found"),
        _face_row("bob", "b3", "duplicate", reason="same sha256", duplicate_of="b1"),
        _face_row("carol", "c0", "rejected", reason="2 faces"),
    ]
    faces = [
        _write(face_rows[:4], FACES_SCHEMA, tmp_path / "faces_0.parquet"),
        _write(face_rows[4:], FACES_SCHEMA, tmp_path / "faces_1.parquet"),
    ]
    aligned = [
        _write(
            [_aligned_row(i, im, ims[0]) for i, ims in {**IMAGES, **SINGLE}.items() for im in ims],
            ALIGNED_SCHEMA,
            tmp_path / "aligned.parquet",
        )
    ]
    return dict(counts=counts, pairs=pairs, embeddings=embeddings, faces=faces, aligned=aligned), dict(
        counts=counts_rows, pairs=pair_rows, emb=emb, faces=face_rows
    )


@pytest.fixture(scope="module")
def random_db(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("aggregate_random")
    files, raw = _random_inputs(tmp_path)
    db = tmp_path / "leam.duckdb"
    build_database(
        db, inputs=AggregateInputs(**files), options=stage_options("aggregate", models=MODELS, levels=LEVELS)
    )
    con = duckdb.connect(str(db), read_only=True)
    yield con, raw
    con.close()


def _view(con, name) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {name}").df()


# ----------------------------------------------------------------------------- hand computations


def hand_counts_long(count_rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in count_rows:
        for c, col in enumerate(CLASS_COLUMNS):
            if r[col] is None:  # absent class: no row
                continue
            px, n_sel, n_pix = r[col], r["n_selected"], r["n_pixels"]
            out.append(
                {
                    k: r[k]
                    for k in ("model", "layer", "layer_idx", "identity", "anchor", "positive", "parser", "selection")
                }
                | {
                    "level": NO_LEVEL if r["level"] is None else r["level"],
                    "class_id": c,
                    "class": CLASS_NAME[c],
                    "pixels": px,
                    "n_selected": n_sel,
                    "n_pixels": n_pix,
                    "abs_pct": 100.0 * px / n_pix,
                    "rel_pct": 100.0 * px / n_sel if n_sel > 0 else np.nan,
                }
            )
    return pd.DataFrame(out)


def _share(g: pd.DataFrame) -> dict:
    rel = g["rel_pct"].to_numpy(float)
    rel = rel[~np.isnan(rel)]
    n_sel = int(g["n_selected"].sum())
    return {
        "n_maps": len(g),
        "mean_rel_pct": rel.mean() if len(rel) else np.nan,
        "pooled_rel_pct": 100.0 * g["pixels"].sum() / n_sel if n_sel > 0 else np.nan,
        "mean_abs_pct": g["abs_pct"].to_numpy(float).mean(),
        "pooled_abs_pct": 100.0 * g["pixels"].sum() / g["n_pixels"].sum(),
    }


def _variation(g: pd.DataFrame) -> dict:
    rel = g["rel_pct"].to_numpy(float)
    rel = rel[~np.isnan(rel)]
    n = len(rel)
    std = float(np.std(rel, ddof=1)) if n >= 2 else np.nan
    mean = float(rel.mean()) if n else np.nan
    cv = 100.0 * std / mean if (n >= 2 and mean != 0) else np.nan
    return {
        "n_maps": n,
        "std": std,
        "mean": mean,
        "min": rel.min() if n else np.nan,
        "max": rel.max() if n else np.nan,
        "cv": cv,
    }


def _group(long: pd.DataFrame, keys: list[str], fn) -> pd.DataFrame:
    """Group with a plain dict (no NaN keys: the NULL level is NO_LEVEL here)."""
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(long[k] for k in keys), strict=True)):
        groups.setdefault(key, []).append(i)
    return pd.DataFrame([dict(zip(keys, key, strict=True)) | fn(long.iloc[idx]) for key, idx in groups.items()])


def hand_cosine_same(pair_rows) -> pd.DataFrame:
    out = []
    for model in sorted({r["model"] for r in pair_rows}):
        cos = np.array([r["cosine"] for r in pair_rows if r["model"] == model])
        out.append(
            {
                "model": model,
                "n_pairs": len(cos) // 2,  # unordered: each ordered pair has its mirror
                "mean_cosine": cos.mean(),
                "std_cosine": np.std(cos, ddof=1) if len(cos) > 1 else np.nan,
            }
        )
    return pd.DataFrame(out)


def hand_cosine_different(emb: dict) -> pd.DataFrame:
    out = []
    for model in sorted({k[0] for k in emb}):
        keys = sorted(k for k in emb if k[0] == model)
        cos = np.array([_cos(emb[a], emb[b]) for a, b in itertools.combinations(keys, 2) if a[1] != b[1]])
        if len(cos):
            out.append(
                {
                    "model": model,
                    "n_pairs": len(cos),
                    "mean_cosine": cos.mean(),
                    "std_cosine": np.std(cos, ddof=1) if len(cos) > 1 else np.nan,
                }
            )
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- comparison


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "level" in df:
        df["level"] = df["level"].to_numpy(float, na_value=np.nan)
        df.loc[np.isnan(df["level"].to_numpy(float)), "level"] = NO_LEVEL
    return df


def assert_frames(view: pd.DataFrame, hand: pd.DataFrame, keys: list[str], floats: list[str], exact: list[str]):
    view, hand = _norm(view), _norm(hand)
    assert len(hand) > 0
    assert not view.duplicated(keys).any(), "duplicate keys in the view"
    assert not hand.duplicated(keys).any()
    assert len(view) == len(hand), (len(view), len(hand))
    for k in keys:  # same key types on both sides (strings as str, numbers as numbers)
        if isinstance(hand[k].iloc[0], str):
            view[k], hand[k] = view[k].astype(str), hand[k].astype(str)
        else:
            view[k], hand[k] = view[k].astype(float), hand[k].astype(float)
    m = view.merge(hand, on=keys, how="outer", suffixes=("_view", "_hand"), indicator=True)
    assert (m["_merge"] == "both").all(), m.loc[m["_merge"] != "both", keys + ["_merge"]]
    m = m.sort_values(keys).reset_index(drop=True)
    for c in floats:
        v = m[f"{c}_view"].to_numpy(float, na_value=np.nan)
        h = m[f"{c}_hand"].to_numpy(float, na_value=np.nan)
        np.testing.assert_array_equal(np.isnan(v), np.isnan(h), err_msg=f"NULL pattern of {c}")
        np.testing.assert_allclose(v, h, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=c)
    for c in exact:
        v = m[f"{c}_view"].to_numpy(float, na_value=np.nan)
        h = m[f"{c}_hand"].to_numpy(float, na_value=np.nan)
        np.testing.assert_array_equal(v, h, err_msg=c)


SHARE_FLOATS = ["mean_rel_pct", "pooled_rel_pct", "mean_abs_pct", "pooled_abs_pct"]


@pytest.fixture(scope="module")
def hand_long(random_db):
    _, raw = random_db
    return hand_counts_long([r for rows in raw["counts"].values() for r in rows])


# ----------------------------------------------------------------------------- random db: tables


def test_tables_are_copied(random_db):
    con, raw = random_db
    n_counts = sum(len(rows) for rows in raw["counts"].values())
    assert n_counts == 2 * 2 * 8 * 3
    assert con.execute("SELECT count(*) FROM counts").fetchone()[0] == n_counts
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(raw["faces"])
    assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == len(raw["pairs"]) == 2 * 8
    assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 2 * 6
    aligned = _view(con, "aligned")
    assert list(aligned.columns) == ["identity", "image", "reference", "is_reference", "size", "align_rmse"]
    assert len(aligned) == 6
    assert con.execute("SELECT class_id, name, col FROM classes ORDER BY class_id").fetchall() == [
        (i, CLASS_NAME[i], CLASS_COLUMNS[i]) for i in range(N_CLASSES)
    ]
    assert con.execute("SELECT * FROM layers ORDER BY model, layer_idx").fetchall() == [
        ("m1", "conv1", 0, "conv1"),
        ("m1", "l1", 1, "layer1.0.conv1"),
        ("m2", "conv1", 0, "features.0"),
        ("m2", "l4", 1, "layer4.1.conv2"),
    ]


# ----------------------------------------------------------------------------- random db: views


def test_rejects(random_db):
    con, raw = random_db
    view = _view(con, "rejects")
    assert list(view.columns) == ["identity", "image", "status", "reason", "duplicate_of", "path"]
    hand = sorted(
        (r["identity"], r["image"], r["status"], r["reason"], r["duplicate_of"], r["path"])
        for r in raw["faces"]
        if r["status"] != "ok"
    )
    got = [
        tuple(None if (isinstance(x, float) and math.isnan(x)) or x is pd.NA else x for x in row)
        for row in con.execute("SELECT * FROM rejects").fetchall()
    ]
    assert got == hand  # the view is ordered by identity, image
    assert {r[2] for r in got} == {"rejected", "duplicate"}
    assert len(got) == 3


def test_counts_long(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "counts_long")
    assert list(view.columns) == [
        "model",
        "layer",
        "layer_idx",
        "identity",
        "anchor",
        "positive",
        "parser",
        "selection",
        "level",
        "class_id",
        "class",
        "pixels",
        "n_selected",
        "n_pixels",
        "abs_pct",
        "rel_pct",
    ]
    # absent classes of the landmarks parser have no rows at all
    n_m1 = 2 * 8 * 3 * len(visible_classes("farl"))  # FaRL's 19 classes; 'unparsed' is not one of them
    n_m2 = 2 * 8 * 3 * len(visible_classes("landmarks"))
    assert len(view) == len(hand_long) == n_m1 + n_m2
    absent = sorted(set(range(N_CLASSES)) - set(visible_classes("landmarks")))
    assert not view[(view["model"] == "m2") & view["class_id"].isin(absent)].shape[0]
    # empty selections: rel_pct NULL, abs_pct 0
    empty = view[view["n_selected"] == 0]
    assert len(empty) == (len(visible_classes("farl")) + 8 * len(visible_classes("landmarks")))
    assert empty["rel_pct"].isna().all() and (empty["abs_pct"] == 0).all()
    assert view.loc[view["n_selected"] > 0, "rel_pct"].notna().all()
    assert_frames(
        view,
        hand_long,
        keys=["model", "layer", "identity", "anchor", "positive", "selection", "level", "class_id"],
        floats=["abs_pct", "rel_pct"],
        exact=["layer_idx", "pixels", "n_selected", "n_pixels"],
    )
    m = view.merge(
        hand_long[["model", "layer", "anchor", "positive", "selection", "class_id", "class", "parser"]],
        on=["model", "layer", "anchor", "positive", "selection", "class_id"],
    )
    assert len(m) == len(view)
    assert (m["class_x"].astype(str) == m["class_y"].astype(str)).all()
    assert (m["parser_x"].astype(str) == m["parser_y"].astype(str)).all()


def test_class_share_layer(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "class_share_layer")
    assert list(view.columns) == [
        "model",
        "parser",
        "layer",
        "layer_idx",
        "selection",
        "level",
        "class_id",
        "class",
        "n_maps",
        *SHARE_FLOATS,
    ]
    keys = ["model", "layer", "selection", "level", "class_id"]
    hand = _group(hand_long, keys + ["layer_idx", "class"], _share)
    assert (hand["n_maps"] == 8).all()
    assert_frames(view, hand, keys=keys, floats=SHARE_FLOATS, exact=["n_maps", "layer_idx"])
    # the whole (m2, l4, top1) group selected nothing: no relative share at all
    empty = hand[(hand["model"] == "m2") & (hand["layer"] == "l4") & (hand["selection"] == "top1")]
    assert len(empty) == len(visible_classes("landmarks"))
    assert empty["mean_rel_pct"].isna().all() and empty["pooled_rel_pct"].isna().all()


def test_class_share_model(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "class_share_model")
    assert list(view.columns) == ["model", "parser", "selection", "level", "class_id", "class", "n_maps", *SHARE_FLOATS]
    keys = ["model", "selection", "level", "class_id"]
    hand = _group(hand_long, keys + ["class"], _share)
    assert (hand["n_maps"] == 16).all()
    assert not np.allclose(hand["mean_abs_pct"], hand["pooled_abs_pct"], rtol=1e-6)
    assert len(hand) == 3 * (len(visible_classes("farl")) + len(visible_classes("landmarks")))
    assert_frames(view, hand, keys=keys, floats=SHARE_FLOATS, exact=["n_maps"])


def test_threshold_table(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "threshold_table")
    level_cols = [level_column(lv) for lv in LEVELS]
    assert level_cols == ["top1", "top100"]
    assert list(view.columns) == ["model", "parser", "class_id", "class", "full_activation", *level_cols]
    share = _group(hand_long, ["model", "selection", "class_id", "class"], _share)
    rows = {}
    for r in share.itertuples(index=False):
        row = rows.setdefault((r.model, r.class_id), {"model": r.model, "class_id": r.class_id, "class": r[3]})
        row["full_activation" if r.selection == "full" else r.selection] = r.mean_rel_pct
    hand = pd.DataFrame(list(rows.values()))
    assert len(hand) == len(visible_classes("farl")) + len(visible_classes("landmarks"))
    assert_frames(view, hand, keys=["model", "class_id"], floats=["full_activation", *level_cols], exact=[])


def test_layer_table(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "layer_table")
    layer_names = ["conv1", "l1", "l4"]
    assert list(view.columns) == ["model", "selection", "level", "class_id", "class", *layer_names]
    share = _group(hand_long, ["model", "layer", "selection", "level", "class_id", "class"], _share)
    rows = {}
    for r in share.itertuples(index=False):
        key = (r.model, r.selection, r.level, r.class_id)
        row = rows.setdefault(
            key,
            {"model": r.model, "selection": r.selection, "level": r.level, "class_id": r.class_id, "class": r[5]}
            | {name: np.nan for name in layer_names},
        )
        row[r.layer] = r.mean_rel_pct
    hand = pd.DataFrame(list(rows.values()))
    # a model's table has NULL in the other models' layer columns
    assert hand.loc[hand["model"] == "m1", "l4"].isna().all()
    assert hand.loc[hand["model"] == "m2", "l1"].isna().all()
    assert_frames(view, hand, keys=["model", "selection", "level", "class_id"], floats=layer_names, exact=[])


@pytest.mark.parametrize("view_name, by_layer", [("model_table", False), ("model_layer_table", True)])
def test_models_side_by_side(random_db, hand_long, view_name, by_layer):
    con, _ = random_db
    view = _view(con, view_name)
    models = list(MODELS)
    lead = ["layer"] if by_layer else []
    assert list(view.columns) == [*lead, "selection", "level", "class_id", "class", *models]
    share = _group(hand_long, [*lead, "model", "selection", "level", "class_id", "class"], _share)
    rows = {}
    for r in share.to_dict("records"):
        key = tuple(r[k] for k in [*lead, "selection", "level", "class_id"])
        row = rows.setdefault(
            key, {k: r[k] for k in [*lead, "selection", "level", "class_id", "class"]} | {m: np.nan for m in models}
        )
        row[r["model"]] = r["mean_rel_pct"]
    hand = pd.DataFrame(list(rows.values()))
    # classes the landmark parser (m2) cannot see are NULL in m2's column, present in m1's
    assert hand.loc[~hand["class_id"].isin(visible_classes("landmarks")), "m2"].isna().all()
    assert_frames(view, hand, keys=[*lead, "selection", "level", "class_id"], floats=models, exact=[])


def test_identity_share(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "identity_share")
    assert list(view.columns) == [
        "model",
        "parser",
        "identity",
        "selection",
        "level",
        "class_id",
        "class",
        "n_maps",
        *SHARE_FLOATS,
    ]
    keys = ["model", "identity", "selection", "level", "class_id"]
    hand = _group(hand_long, keys + ["class"], _share)
    assert set(hand["n_maps"]) == {2 * 6, 2 * 2}  # 2 layers x ordered pairs
    assert_frames(view, hand, keys=keys, floats=SHARE_FLOATS, exact=["n_maps"])


def test_identity_variation(random_db, hand_long):
    con, _ = random_db
    view = _view(con, "identity_variation")
    assert list(view.columns) == [
        "model",
        "identity",
        "selection",
        "level",
        "class_id",
        "class",
        "n_maps",
        "std",
        "mean",
        "min",
        "max",
        "cv",
    ]
    keys = ["model", "identity", "selection", "level", "class_id"]
    hand = _group(hand_long, keys + ["class"], _variation)
    # (m1, alice, top1) lost one map to the empty selection; (m2, *, top1) lost the l4 maps
    assert set(
        hand.loc[(hand["model"] == "m1") & (hand["identity"] == "alice") & (hand["selection"] == "top1"), "n_maps"]
    ) == {11}
    assert set(hand.loc[(hand["model"] == "m2") & (hand["selection"] == "top1"), "n_maps"]) == {6, 2}
    assert_frames(view, hand, keys=keys, floats=["std", "mean", "min", "max", "cv"], exact=["n_maps"])


def test_cosine_same(random_db):
    con, raw = random_db
    view = _view(con, "cosine_same")
    assert list(view.columns) == ["model", "n_pairs", "mean_cosine", "std_cosine"]
    hand = hand_cosine_same(raw["pairs"])
    assert list(hand["n_pairs"]) == [4, 4]  # 8 ordered pairs each: 4 unordered
    assert_frames(view, hand, keys=["model"], floats=["mean_cosine", "std_cosine"], exact=["n_pairs"])


# list_cosine_similarity on FLOAT[] embeddings returns FLOAT: every per-pair cosine of the view is
# rounded to float32 before the double mean / std, so only float32 agreement can be asked here
# (test_closed_form checks exactness on cosines that float32 represents exactly).
COS_RTOL = 1e-6


def test_cosine_different(random_db):
    con, raw = random_db
    view = _view(con, "cosine_different")
    assert list(view.columns) == ["model", "n_pairs", "mean_cosine", "std_cosine"]
    hand = hand_cosine_different(raw["emb"])
    # 6 images of 3 identities (3 + 2 + 1): 15 unordered pairs - 3 - 1 same-identity ones
    assert list(hand["n_pairs"]) == [11, 11]
    m = view.merge(hand, on="model", suffixes=("_view", "_hand"))
    assert len(m) == len(view) == len(hand) == 2
    np.testing.assert_array_equal(m["n_pairs_view"], m["n_pairs_hand"])
    for c in ("mean_cosine", "std_cosine"):
        np.testing.assert_allclose(
            m[f"{c}_view"].to_numpy(float), m[f"{c}_hand"].to_numpy(float), rtol=COS_RTOL, atol=1e-7, err_msg=c
        )
    # the embeddings were made so that same identities are close and different ones far
    same = hand_cosine_same(raw["pairs"])
    assert (same["mean_cosine"].to_numpy() > 0.9).all()
    assert (same["mean_cosine"].to_numpy() > hand["mean_cosine"].to_numpy() + 0.2).all()


def test_cosine_summary(random_db):
    con, raw = random_db
    view = _view(con, "cosine_summary")
    assert list(view.columns) == [
        "model",
        "same_pairs",
        "same_mean",
        "same_std",
        "different_pairs",
        "different_mean",
        "different_std",
        "margin",
    ]
    same, diff = hand_cosine_same(raw["pairs"]), hand_cosine_different(raw["emb"])
    hand = same.merge(diff, on="model", suffixes=("_s", "_d"))
    m = view.merge(hand, on="model")
    assert len(m) == len(view) == 2
    np.testing.assert_array_equal(m["same_pairs"], m["n_pairs_s"])
    np.testing.assert_array_equal(m["different_pairs"], m["n_pairs_d"])
    np.testing.assert_allclose(m["same_mean"], m["mean_cosine_s"], rtol=RTOL)
    np.testing.assert_allclose(m["same_std"], m["std_cosine_s"], rtol=RTOL)
    np.testing.assert_allclose(m["different_mean"], m["mean_cosine_d"], rtol=COS_RTOL)
    np.testing.assert_allclose(m["different_std"], m["std_cosine_d"], rtol=COS_RTOL)
    np.testing.assert_allclose(m["margin"], m["mean_cosine_s"] - m["mean_cosine_d"], rtol=COS_RTOL)
    # margin is exactly the difference of the view's own two means
    np.testing.assert_allclose(m["margin"], m["same_mean"] - m["different_mean"], rtol=RTOL)


# ----------------------------------------------------------------------------- closed form


@pytest.fixture(scope="module")
def trivial_db(tmp_path_factory):
    """One model m, one layer, identity x (2 images: 2 maps), only face (2) and nose (10) visible.

    ========= ============ ============ ===========
    map       full         top1         top100
    ========= ============ ============ ===========
    i1 -> i2  30, 10 / 40  1, 0 / 1     0, 0 / 0
    i2 -> i1  10, 10 / 20  2, 0 / 2     3, 1 / 4
    ========= ============ ============ ===========

    (face, nose pixels / n_selected; n_pixels = 100). Embeddings with cosines exact in float32.
    A second model "solo" has a single identity: no different-identity pair.
    """
    tmp = tmp_path_factory.mktemp("aggregate_trivial")
    table = {
        ("i1", "i2"): {"full": (30, 10), "top1": (1, 0), "top100": (0, 0)},
        ("i2", "i1"): {"full": (10, 10), "top1": (2, 0), "top100": (3, 1)},
    }
    rows = [
        _count_row("m", "conv1", 0, "x", a, p, sel, {2: face, 10: nose}, face + nose)
        for (a, p), sels in table.items()
        for sel, (face, nose) in sels.items()
    ]
    emb = {
        ("m", "x", "i1"): [1, 0, 0, 0],
        ("m", "x", "i2"): [1, 1, 1, 1],
        ("m", "y", "j1"): [0, 0, 0, 2],
        ("m", "y", "j2"): [-1, -1, -1, -1],
        ("solo", "x", "i1"): [1, 0, 0, 0],
        ("solo", "x", "i2"): [0, 1, 0, 0],
    }
    emb_rows = [
        {"model": m, "identity": i, "image": im, "embedding": [float(v) for v in vec]}
        for (m, i, im), vec in emb.items()
    ]
    pair_rows = [
        {"model": m, "identity": i, "anchor": a, "positive": p, "cosine": _cos(emb[(m, i, a)], emb[(m, i, p)])}
        for m, i, ims in [("m", "x", ["i1", "i2"]), ("m", "y", ["j1", "j2"]), ("solo", "x", ["i1", "i2"])]
        for a, p in _ordered_pairs(ims)
    ]
    faces = [
        _face_row("x", "i1", "ok"),
        _face_row("x", "i2", "ok"),
        _face_row("y", "j1", "ok"),
        _face_row("y", "j2", "ok"),
        _face_row("x", "i3", "rejected", reason="no face found"),
        _face_row("x", "i0", "duplicate", reason="same sha256", duplicate_of="i1"),
    ]
    db = tmp / "t.duckdb"
    build_database(
        db,
        inputs=AggregateInputs(
            counts=[_write(rows, COUNTS_SCHEMA, tmp / "c.parquet")],
            pairs=[_write(pair_rows, PAIRS_SCHEMA, tmp / "p.parquet")],
            embeddings=[_write(emb_rows, EMBEDDINGS_SCHEMA, tmp / "e.parquet")],
            faces=[_write(faces, FACES_SCHEMA, tmp / "f.parquet")],
            aligned=[
                _write(
                    [_aligned_row("x", "i1", "i1"), _aligned_row("x", "i2", "i1")], ALIGNED_SCHEMA, tmp / "a.parquet"
                )
            ],
        ),
        options=stage_options(
            "aggregate",
            models={"m": {"layers": {"conv1": "conv1"}}, "solo": {"layers": {"conv1": "conv1"}}},
            levels=LEVELS,
        ),
    )
    con = duckdb.connect(str(db), read_only=True)
    yield con
    con.close()


def _one(con, sql, *params):
    rows = con.execute(sql, params).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def test_closed_form_counts_long(trivial_db):
    con = trivial_db
    assert _one(con, "SELECT count(*) FROM counts_long")[0] == 2 * 3 * 2  # maps x selections x visible classes
    got = con.execute("""SELECT anchor, selection, class, pixels, abs_pct, rel_pct FROM counts_long
                         WHERE anchor = 'i1' ORDER BY selection, class_id""").fetchall()
    assert got == [
        ("i1", "full", "face", 30, 30.0, 75.0),
        ("i1", "full", "nose", 10, 10.0, 25.0),
        ("i1", "top1", "face", 1, 1.0, 100.0),
        ("i1", "top1", "nose", 0, 0.0, 0.0),
        ("i1", "top100", "face", 0, 0.0, None),
        ("i1", "top100", "nose", 0, 0.0, None),
    ]
    assert (
        _one(con, "SELECT level FROM counts_long WHERE anchor = 'i1' AND selection = 'full' AND class_id = 2")[0]
        is None
    )
    assert _one(con, "SELECT DISTINCT level FROM counts_long WHERE selection = 'top1'")[0] == 1.0


def test_closed_form_shares(trivial_db):
    con = trivial_db
    sql = """SELECT n_maps, mean_rel_pct, pooled_rel_pct, mean_abs_pct, pooled_abs_pct FROM {view}
             WHERE model = 'm' AND selection = ? AND class = ?"""
    expected = {
        ("full", "face"): (2, 62.5, 100 * 40 / 60, 20.0, 20.0),
        ("full", "nose"): (2, 37.5, 100 * 20 / 60, 10.0, 10.0),
        ("top1", "face"): (2, 100.0, 100.0, 1.5, 1.5),
        ("top1", "nose"): (2, 0.0, 0.0, 0.0, 0.0),
        ("top100", "face"): (2, 75.0, 75.0, 1.5, 1.5),  # the empty map counts in n_maps / abs, not in rel
        ("top100", "nose"): (2, 25.0, 25.0, 0.5, 0.5),
    }
    for view in ("class_share_layer", "class_share_model", "identity_share"):
        assert _one(con, f"SELECT count(*) FROM {view}")[0] == 6
        for (sel, cls), exp in expected.items():
            got = _one(con, sql.format(view=view), sel, cls)
            assert got[0] == exp[0]
            np.testing.assert_allclose(got[1:], exp[1:], rtol=RTOL, err_msg=f"{view} {sel} {cls}")
    assert _one(con, "SELECT layer_idx FROM class_share_layer WHERE selection = 'full' AND class_id = 2")[0] == 0


def test_closed_form_tables(trivial_db):
    con = trivial_db
    got = con.execute("SELECT * FROM threshold_table ORDER BY class_id").fetchall()
    assert got == [("m", "landmarks", 2, "face", 62.5, 100.0, 75.0), ("m", "landmarks", 10, "nose", 37.5, 0.0, 25.0)]
    got = con.execute("SELECT * FROM layer_table ORDER BY selection, class_id").fetchall()
    assert got == [
        ("m", "full", None, 2, "face", 62.5),
        ("m", "full", None, 10, "nose", 37.5),
        ("m", "top1", 1.0, 2, "face", 100.0),
        ("m", "top1", 1.0, 10, "nose", 0.0),
        ("m", "top100", 100.0, 2, "face", 75.0),
        ("m", "top100", 100.0, 10, "nose", 25.0),
    ]


def test_closed_form_identity_variation(trivial_db):
    con = trivial_db
    rows = {
        (r[0], r[1]): r[2:]
        for r in con.execute(
            "SELECT selection, class, n_maps, std, mean, min, max, cv FROM identity_variation WHERE identity = 'x'"
        ).fetchall()
    }
    assert len(rows) == 6
    s = 12.5 * math.sqrt(2)  # sample std of (75, 50) and of (25, 50)
    expected = {
        ("full", "face"): (2, s, 62.5, 50.0, 75.0, 100 * s / 62.5),
        ("full", "nose"): (2, s, 37.5, 25.0, 50.0, 100 * s / 37.5),
        ("top1", "face"): (2, 0.0, 100.0, 100.0, 100.0, 0.0),
        ("top1", "nose"): (2, 0.0, 0.0, 0.0, 0.0, None),  # CV of a zero mean is NULL
        ("top100", "face"): (1, None, 75.0, 75.0, 75.0, None),  # one non-NULL share: no std
        ("top100", "nose"): (1, None, 25.0, 25.0, 25.0, None),
    }
    for key, exp in expected.items():
        got = rows[key]
        assert got[0] == exp[0], key
        for g, e in zip(got[1:], exp[1:], strict=True):
            if e is None:
                assert g is None, (key, got)
            else:
                assert g == pytest.approx(e, rel=RTOL, abs=ATOL), (key, got)


def test_closed_form_cosines(trivial_db):
    con = trivial_db
    # same: x (i1, i2) = 0.5 twice, y (j1, j2) = -0.5 twice; solo: (i1, i2) = 0 twice
    got = con.execute("SELECT * FROM cosine_same ORDER BY model").fetchall()
    assert got[0][:3] == ("m", 2, 0.0) and got[0][3] == pytest.approx(math.sqrt(1 / 3), rel=RTOL)
    assert got[1] == ("solo", 1, 0.0, 0.0)  # unordered photo pairs
    # different (x < y): i1-j1 0, i1-j2 -0.5, i2-j1 0.5, i2-j2 -1 -> mean -0.25, sample std sqrt(5/12)
    got = con.execute("SELECT * FROM cosine_different").fetchall()
    assert len(got) == 1 and got[0][:3] == ("m", 4, -0.25)
    assert got[0][3] == pytest.approx(math.sqrt(5 / 12), rel=RTOL)
    got = con.execute("SELECT * FROM cosine_summary ORDER BY model").fetchall()
    assert got[0][0:2] == ("m", 2) and got[0][2] == 0.0 and got[0][3] == pytest.approx(math.sqrt(1 / 3), rel=RTOL)
    assert got[0][4:6] == (4, -0.25) and got[0][7] == 0.25
    assert got[0][6] == pytest.approx(math.sqrt(5 / 12), rel=RTOL)
    assert got[1] == ("solo", 1, 0.0, 0.0, None, None, None, None)  # no different-identity pair


def test_closed_form_rejects(trivial_db):
    got = trivial_db.execute("SELECT identity, image, status, reason, duplicate_of FROM rejects").fetchall()
    assert got == [("x", "i0", "duplicate", "same sha256", "i1"), ("x", "i3", "rejected", "no face found", None)]


def _verification(emb: pd.DataFrame) -> pd.DataFrame:
    import duckdb

    from leam.stages.aggregate import create_verification_view

    con = duckdb.connect()
    con.register("emb_df", emb)
    con.execute("CREATE TABLE embeddings AS SELECT model, identity, image, embedding::FLOAT[] AS embedding FROM emb_df")
    create_verification_view(con)
    return con.execute("SELECT * FROM verification").df()


def test_verification_auc_and_rank1_by_hand():
    """AUC against scikit-learn's roc_auc_score, rank-1 by a numpy nearest-neighbour loop, on
    embeddings that overlap (two models, 5 identities with 1-4 photos, noise as large as the signal)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    rows = []
    for model, noise in (("m1", 0.8), ("m2", 1.5)):
        for identity, n in zip("abcde", (4, 3, 3, 2, 1), strict=True):
            centre = rng.normal(size=6)
            rows += [
                {
                    "model": model,
                    "identity": identity,
                    "image": f"{identity}{i}",
                    "embedding": (centre + noise * rng.normal(size=6)).astype(np.float32).tolist(),
                }
                for i in range(n)
            ]
    emb = pd.DataFrame(rows)
    view = _verification(emb)
    assert list(view.columns) == [
        "model",
        "n_images",
        "n_same",
        "n_different",
        "same_mean",
        "different_mean",
        "auc",
        "rank1",
    ]
    assert list(view["model"]) == ["m1", "m2"]
    for row in view.itertuples():
        sub = emb[emb["model"] == row.model].sort_values(["identity", "image"])
        keys = list(zip(sub["identity"], sub["image"], strict=True))
        vec = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in zip(keys, sub["embedding"], strict=True)}
        pairs = list(itertools.combinations(keys, 2))
        same = np.array([a[0] == b[0] for a, b in pairs])
        cos = np.array([_cos(vec[a], vec[b]) for a, b in pairs])
        assert (row.n_images, row.n_same, row.n_different) == (13, 6 + 3 + 3 + 1, 78 - 13)
        assert row.same_mean == pytest.approx(cos[same].mean(), rel=1e-9)
        assert row.different_mean == pytest.approx(cos[~same].mean(), rel=1e-9)
        assert 0.5 < row.auc < 1  # overlapping, so the check below is not 1 == 1
        assert row.auc == pytest.approx(roc_auc_score(same, cos), abs=1e-12)
        hits = [
            max((o for o in keys if o != k), key=lambda o: _cos(vec[k], vec[o]))[0] == k[0] for k in keys if k[0] != "e"
        ]  # e has one photo: no mate to find
        assert 0 < np.mean(hits) < 1
        assert row.rank1 == pytest.approx(np.mean(hits), abs=1e-12)
    # embeddings that do not separate anybody: every cosine ties, AUC 0.5
    flat = emb.assign(embedding=[[1.0, 0.0]] * len(emb))
    assert (_verification(flat)["auc"] == 0.5).all()


def test_a_photo_filed_under_the_wrong_person_is_listed():
    """#12 case 13: a biden photo in obama's folder used to show only as a weaker cosine."""
    from leam.stages.aggregate import create_cosine_views

    rng = np.random.default_rng(5)
    base = {"A": rng.normal(size=16), "B": rng.normal(size=16), "C": rng.normal(size=16)}
    files = {"A": ["a1", "a2", "a3", "a4"], "B": ["b1", "b2", "b3"], "C": ["c1", "c2"]}
    emb_rows, pair_rows, unit = [], [], {}
    for model, noise in (("m1", 0.3), ("m2", 0.5)):
        for ident, imgs in files.items():
            for img in imgs:
                v = base["B" if img == "a4" else ident] + noise * rng.normal(size=16)  # a4 shows B
                unit[model, ident, img] = v / np.linalg.norm(v)
                emb_rows.append(
                    {"model": model, "identity": ident, "image": img, "embedding": v.astype(np.float32).tolist()}
                )
        for ident, imgs in files.items():
            for a, b in itertools.permutations(imgs, 2):
                pair_rows.append(
                    {
                        "model": model,
                        "identity": ident,
                        "anchor": a,
                        "positive": b,
                        "cosine": float(unit[model, ident, a] @ unit[model, ident, b]),
                    }
                )
    con = duckdb.connect()
    pairs = pa.Table.from_pylist(pair_rows, schema=PAIRS_SCHEMA)  # noqa: F841
    embeddings = pa.Table.from_pylist(emb_rows, schema=EMBEDDINGS_SCHEMA)  # noqa: F841
    con.execute("CREATE TABLE pairs AS SELECT * FROM pairs")
    con.execute("CREATE TABLE embeddings AS SELECT * FROM embeddings")
    create_cosine_views(con)
    # by hand: per model, the midpoint of the mean same (ordered pairs) and different (unordered,
    # float32 embeddings) cosines; a photo is flagged when its mean cosine to its identity is below it
    want = {}
    for model in ("m1", "m2"):
        same = [r["cosine"] for r in pair_rows if r["model"] == model]
        e32 = {
            (r["identity"], r["image"]): np.asarray(r["embedding"], np.float64) for r in emb_rows if r["model"] == model
        }
        diff = [
            x @ y / np.linalg.norm(x) / np.linalg.norm(y)
            for (i, _), x in e32.items()
            for (j, _), y in e32.items()
            if i < j
        ]
        threshold = (np.mean(same) + np.mean(diff)) / 2
        for ident, imgs in files.items():
            for img in imgs:
                own = np.mean([r["cosine"] for r in pair_rows if r["model"] == model and r["anchor"] == img])
                if own < threshold:
                    want.setdefault((ident, img), []).append((model, own, threshold))
    got = con.execute(
        "SELECT identity, image, n_models, of_models, models, mean_own_cosine, mean_threshold, n_others "
        "FROM suspect_labels"
    ).fetchall()
    assert ("A", "a4") in want and len(want[("A", "a4")]) == 2  # the misfiled photo, by both models
    assert [(r[0], r[1]) for r in got][0] == ("A", "a4")
    assert {(r[0], r[1]) for r in got} == set(want)
    for ident, img, n, of, models, own, thr, n_others in got:
        flags = want[(ident, img)]
        assert (n, of, models, n_others) == (len(flags), 2, ", ".join(m for m, _, _ in flags), len(files[ident]) - 1)
        assert own == pytest.approx(np.mean([f[1] for f in flags])) and thr == pytest.approx(
            np.mean([f[2] for f in flags])
        )


def test_people_without_a_pair_are_listed_with_why():
    """#12 case 12: a person with one usable photo used to contribute no pair without a word."""
    from leam.stages.aggregate import create_input_views

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE images (identity VARCHAR, image VARCHAR, status VARCHAR, reason VARCHAR, "
        "duplicate_of VARCHAR, path VARCHAR)"
    )
    rows = [
        ("ann", "1.jpg", "ok"),
        ("ann", "2.jpg", "ok"),
        ("bob", "1.jpg", "ok"),
        ("bob", "2.jpg", "rejected"),
        ("cy", "1.jpg", "duplicate"),
        ("cy", "2.jpg", "rejected"),
        ("", "loose.jpg", "rejected"),
    ]
    con.executemany("INSERT INTO images VALUES (?, ?, ?, '', NULL, '')", rows)
    create_input_views(con)
    assert con.execute("SELECT * FROM unpaired_identities").fetchall() == [
        ("bob", 2, 1, "one usable photo: no same-identity pair (used in different-identity comparisons only)"),
        ("cy", 2, 0, "no usable photo: not in the study"),
    ]
    assert len(con.execute("SELECT * FROM rejects").fetchall()) == 4
