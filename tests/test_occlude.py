"""Occlusion: exact pixel counts, seeded random pixels, and the cosine drop computed by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn as nn

from leam.core.paper import OCCLUSION_SIZES as SIZES
from leam.models.loader import FaceModel
from leam.stages.occlude import (
    atlas_occlusion,
    choose_pairs,
    n_occluded,
    occlude_pairs,
    random_mask,
    top_mask,
)


class MeanColour(nn.Module):
    """A face model whose embedding is the mean colour of the image: (B, 3, H, W) -> (B, 3)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def tiny_model() -> FaceModel:
    return FaceModel("mean_colour", MeanColour().eval(), (20, 20), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), {})


def test_number_of_occluded_pixels_is_exact():
    assert SIZES == (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 5, 10)
    assert n_occluded(1, 22500) == 225
    assert n_occluded(0.01, 22500) == 3  # 2.25 rounded up
    assert n_occluded(0.05, 22500) == 12  # 11.25 rounded up
    assert n_occluded(0.01, 400) == 1  # at least one pixel
    assert n_occluded(10, 400) == 40


def test_top_mask_takes_the_highest_with_ties_by_index():
    m = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]])
    assert top_mask(m, 2)[0].tolist() == [[True, True], [False, False]]  # 0.9, then the first 0.5
    assert int(top_mask(torch.rand(3, 7, 7), 11).sum()) == 33


def test_random_masks_are_seeded_and_exact():
    a = random_mask((30, 30), 17, (0, "id", "a.jpg", "b.jpg", 1.0))
    b = random_mask((30, 30), 17, (0, "id", "a.jpg", "b.jpg", 1.0))
    c = random_mask((30, 30), 17, (1, "id", "a.jpg", "b.jpg", 1.0))
    assert int(a.sum()) == 17 and torch.equal(a, b) and not torch.equal(a, c)


def _frames(n=3, s=20, seed=0):
    rng = np.random.default_rng(seed)
    return {f"img{i}.jpg": rng.integers(30, 256, (s, s, 3), dtype=np.uint8) for i in range(n)}


def test_cosine_drop_equals_a_hand_computation():
    frames = _frames()
    rng = np.random.default_rng(1)
    sources = {
        (src, "conv1"): {(a, p): torch.from_numpy(rng.random((20, 20))) for a in frames for p in frames if a != p}
        for src in ("s1", "s2")
    }
    rows = occlude_pairs(
        frames, sources, {"mean_colour": tiny_model()}, identity="x", sizes=(1, 10), seed=0, positives_per_anchor=None
    )
    assert len(rows) == 2 * 6 * 2 * 2  # sources x pairs x sizes x methods
    # the random rows are one draw per anchor and size, the same under both sources
    rand = {}
    for r in rows:
        if r["method"] == "random":
            rand.setdefault((r["anchor"], r["positive"], r["size_pct"]), set()).add(r["drop"])
    assert len(rand) == 6 * 2 and all(len(v) == 1 for v in rand.values())
    for r in rows:
        maps = sources[(r["source_model"], r["source_layer"])]
        a = frames[r["anchor"]].astype(np.float64)
        p = frames[r["positive"]].astype(np.float64)
        k = r["n_occluded"]
        assert k == (4 if r["size_pct"] == 1 else 40)
        if r["method"] == "leam":
            flat = maps[(r["anchor"], r["positive"])].numpy().ravel()
            idx = np.argsort(-flat, kind="stable")[:k]
        else:
            idx = np.flatnonzero(random_mask((20, 20), k, (0, "x", r["anchor"], r["size_pct"])).numpy())
        occ = a.reshape(-1, 3).copy()
        occ[idx] = 0  # black
        e_a, e_p, e_o = a.reshape(-1, 3).mean(0), p.reshape(-1, 3).mean(0), occ.mean(0)
        cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
        assert r["cosine_before"] == pytest.approx(cos(e_a, e_p), abs=1e-6)
        assert r["cosine_after"] == pytest.approx(cos(e_o, e_p), abs=1e-6)
        assert r["drop"] == pytest.approx(cos(e_a, e_p) - cos(e_o, e_p), abs=1e-6)


def test_maps_with_too_few_relevant_pixels_are_skipped_with_a_reason(tmp_path):
    """#12 case 8 (occlusion): an all-zero or sparse LEAM map used to occlude its first pixels by
    index (the frame's top-left corner) as if they were LEAM's."""
    from leam.core.io import read_parquet, write_parquet
    from leam.core.tables import RANKINGS_SCHEMA
    from leam.stages.occlude import read_rankings

    frames = _frames()
    rng = np.random.default_rng(1)
    maps = {(a, p): torch.from_numpy(rng.random((20, 20))) for a in frames for p in frames if a != p}
    maps[("img0.jpg", "img1.jpg")] = torch.zeros(20, 20)  # all zero
    sparse = torch.zeros(400, dtype=torch.float64)
    sparse[torch.tensor([5, 50, 77, 123, 300, 399, 2, 9, 13, 21])] = torch.linspace(1.0, 0.1, 10, dtype=torch.float64)
    maps[("img1.jpg", "img2.jpg")] = sparse.reshape(20, 20)  # 10 relevant pixels: 1 % (4 px) yes, 10 % (40) no
    rows = occlude_pairs(
        frames,
        {("s", "l"): maps},
        {"mean_colour": tiny_model()},
        identity="x",
        sizes=(1, 10),
        seed=0,
        positives_per_anchor=None,
    )
    assert len(rows) == 6 * 2 * 2
    skipped = {(r["anchor"], r["positive"], r["size_pct"], r["method"]): r["skipped"] for r in rows if r["skipped"]}
    assert skipped == {
        ("img0.jpg", "img1.jpg", size, m): f"the LEAM map has 0 pixels above 0, fewer than the {k} to occlude"
        for size, k in ((1.0, 4), (10.0, 40))
        for m in ("leam", "random")
    } | {
        ("img1.jpg", "img2.jpg", 10.0, m): "the LEAM map has 10 pixels above 0, fewer than the 40 to occlude"
        for m in ("leam", "random")
    }
    for r in rows:
        assert (r["drop"] is None and r["cosine_after"] is None) == bool(r["skipped"])
    # the sparse map's 1 % is its 4 highest pixels
    r = next(
        r
        for r in rows
        if (r["anchor"], r["positive"], r["size_pct"], r["method"]) == ("img1.jpg", "img2.jpg", 1.0, "leam")
    )
    occ = frames["img1.jpg"].astype(np.float64).reshape(-1, 3).copy()
    occ[[5, 50, 77, 123]] = 0
    e_o, e_p = occ.mean(0), frames["img2.jpg"].astype(np.float64).reshape(-1, 3).mean(0)
    assert r["cosine_after"] == pytest.approx(float(e_o @ e_p / np.linalg.norm(e_o) / np.linalg.norm(e_p)), abs=1e-6)
    # extract's rankings file says the same through n_relevant
    write_parquet(
        pa.Table.from_pylist(
            [
                {
                    "model": "s",
                    "layer": "l",
                    "identity": "x",
                    "anchor": a,
                    "positive": p,
                    "size": 20,
                    "pixels": np.argsort(-m.numpy().ravel(), kind="stable")[:40].astype("<i4").tobytes(),
                    "n_relevant": int((m > 0).sum()),
                }
                for (a, p), m in sorted(maps.items())
            ],
            schema=RANKINGS_SCHEMA,
        ),
        tmp_path / "r.parquet",
    )
    stored = read_rankings(tmp_path / "r.parquet", "l")["x"]
    again = occlude_pairs(
        frames,
        {("s", "l"): stored},
        {"mean_colour": tiny_model()},
        identity="x",
        sizes=(1, 10),
        seed=0,
        positives_per_anchor=None,
    )
    assert again == rows
    # a file out of the writer's (identity, anchor, positive) order is an error naming it, not a wrong lookup
    t = read_parquet(tmp_path / "r.parquet")
    write_parquet(t.take(list(range(t.num_rows))[::-1]), tmp_path / "reversed.parquet")
    with pytest.raises(ValueError, match=r"reversed\.parquet: rows are not sorted by \(identity, anchor, positive\)"):
        read_rankings(tmp_path / "reversed.parquet", "l")


def test_atlas_methods_and_leave_one_out():
    frames = {"x": _frames(3, seed=2), "y": _frames(2, seed=3)}
    rng = np.random.default_rng(4)
    own = {ident: {im: torch.from_numpy(rng.random((20, 20))) for im in f} for ident, f in frames.items()}
    rows = atlas_occlusion(frames, own, {"mean_colour": tiny_model()}, sizes=(5,), seed=0)
    methods = {(r["identity"], r["image"]): set() for r in rows}
    for r in rows:
        methods[(r["identity"], r["image"])].add(r["method"])
        assert r["n_occluded"] == 20 and r["n_positives"] == len(frames[r["identity"]]) - 1
    assert all(m == {"own", "identity", "population", "random"} for m in methods.values())
    # the identity atlas of img0 of x is the mean of x's other two own maps: check its pixels
    r = next(r for r in rows if r["identity"] == "x" and r["image"] == "img0.jpg" and r["method"] == "identity")
    atlas = (own["x"]["img1.jpg"] + own["x"]["img2.jpg"]) / 2
    idx = np.argsort(-atlas.numpy().ravel(), kind="stable")[:20]
    h = frames["x"]["img0.jpg"].astype(float).reshape(-1, 3)
    occ = h.copy()
    occ[idx] = 0
    pos = [frames["x"][i].astype(float).reshape(-1, 3).mean(0) for i in ("img1.jpg", "img2.jpg")]
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    want = np.mean([cos(h.mean(0), q) for q in pos]) - np.mean([cos(occ.mean(0), q) for q in pos])
    assert r["drop"] == pytest.approx(want, abs=1e-6)


def test_an_all_zero_atlas_is_skipped_not_occluded_by_index():
    """#12 case 8 (atlas): an all-zero own map used to occlude the frame's first pixels by index."""
    frames = {"x": _frames(3, seed=2)}
    rng = np.random.default_rng(4)
    own = {"x": {im: torch.from_numpy(rng.random((20, 20))) for im in frames["x"]}}
    own["x"]["img0.jpg"] = torch.zeros(20, 20)
    rows = atlas_occlusion(frames, own, {"mean_colour": tiny_model()}, sizes=(5,), seed=0)
    got = {(r["image"], r["method"]): r for r in rows}
    assert got[("img0.jpg", "own")]["drop"] is None
    assert got[("img0.jpg", "own")]["skipped"] == "the own map has 0 pixels above 0, fewer than the 20 to occlude"
    assert all(r["drop"] is not None and r["skipped"] is None for k, r in got.items() if k != ("img0.jpg", "own"))
    # img1's identity atlas averages img0's zeros with img2's map: still 400 pixels above 0
    assert got[("img1.jpg", "identity")]["drop"] is not None


def test_positives_per_anchor_draws_a_seeded_subset():
    pairs = [(a, p) for a in "abcde" for p in "abcde" if a != p]
    assert choose_pairs(pairs, None, seed=0, identity="x") == sorted(pairs)
    two = choose_pairs(pairs, 2, seed=0, identity="x")
    assert [a for a, _ in two] == sorted("abcde" * 2)  # every anchor kept, two positives each
    assert set(two) <= set(pairs) and len(set(two)) == 10
    assert two == choose_pairs(list(reversed(pairs)), 2, seed=0, identity="x")  # order of the input does not matter
    assert two != choose_pairs(pairs, 2, seed=1, identity="x") or two != choose_pairs(pairs, 2, seed=2, identity="x")
    assert choose_pairs(pairs, 9, seed=0, identity="x") == sorted(pairs)  # fewer positives than asked: all
    frames = _frames()
    rng = np.random.default_rng(1)
    maps = {(a, p): torch.from_numpy(rng.random((20, 20))) for a in frames for p in frames if a != p}
    rows = occlude_pairs(
        frames,
        {("s", "l"): maps},
        {"mean_colour": tiny_model()},
        identity="x",
        sizes=(1,),
        seed=0,
        positives_per_anchor=1,
    )
    assert sorted({(r["anchor"], r["positive"]) for r in rows}) == choose_pairs(sorted(maps), 1, seed=0, identity="x")
    assert len(rows) == len(frames) * 2


def test_random_pixels_are_drawn_inside_each_target_models_window():
    """#14: random pixels over the whole frame include rows a windowed target never sees, which
    made random occlusion look weaker than it is. Each target now gets its own draw inside its
    window; a whole-frame (chip) target keeps the old draw exactly."""
    from leam.stages.occlude import window_pixels

    whole = random_mask((30, 30), 17, (0, "id", "a", 1.0))
    assert torch.equal(whole, random_mask((30, 30), 17, (0, "id", "a", 1.0), (0, 0, 30, 30)))
    inside = random_mask((30, 30), 50, (0, "id", "a", 1.0), (-4, 10, 20, 40))  # reaches past the frame
    ys, xs = np.nonzero(inside.numpy())
    assert len(ys) == 50 and ys.min() >= 10 and xs.max() < 20
    assert len(window_pixels((30, 30), (-4, 10, 20, 40))) == 20 * 20
    frames = _frames(3, s=40)
    rng = np.random.default_rng(1)
    sources = {("s", "l"): {(a, p): torch.from_numpy(rng.random((40, 40))) for a in frames for p in frames if a != p}}
    chip = FaceModel("chip", MeanColour().eval(), (40, 40), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), {})
    arc = FaceModel("arc", MeanColour().eval(), (40, 40), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), {}, alignment="arcface")
    win = arc.window(40)
    assert win != (0, 0, 40, 40)
    rows = occlude_pairs(
        frames, sources, {"chip": chip, "arc": arc}, identity="x", sizes=(5,), seed=0, positives_per_anchor=None
    )
    for r in (r for r in rows if r["method"] == "random"):
        model, window = (chip, None) if r["model"] == "chip" else (arc, win)
        mask = random_mask((40, 40), r["n_occluded"], (0, "x", r["anchor"], 5.0), window)
        if window is not None:
            ys, xs = np.nonzero(mask.numpy())
            assert ys.min() >= max(0, win[1]) and ys.max() < min(40, win[3])
            assert xs.min() >= max(0, win[0]) and xs.max() < min(40, win[2])
        occ = torch.from_numpy(frames[r["anchor"]].copy())
        occ[mask] = 0
        e = model.embed(torch.stack([occ, torch.from_numpy(frames[r["positive"]])]))
        assert r["cosine_after"] == pytest.approx(float(e[0] @ e[1]), abs=1e-6)
