"""The extract job's summaries (counts, image maps, rankings) against recomputations from the raw maps
it stores, and the map-storage choice: only ``results/maps`` changes with it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from conftest import stage_options, write_sub_shard
from test_counting import naive_counts

from leam.core.classes import CLASS_COLUMNS, visible_classes
from leam.core.io import read_parquet
from leam.core.maps import decode_map, to_frame
from leam.core.paper import LEVELS
from leam.core.selection import selection_names
from leam.stages.extract import OUTPUTS, extract_shard
from leam.stages.occlude import n_occluded

SIZES = (1, 10)


@pytest.fixture(scope="module")
def shard(default_aligned, tmp_path_factory):
    """Two identities, four photos each, aligned and parsed as the pipeline does."""
    return write_sub_shard(default_aligned, tmp_path_factory.mktemp("summaries"), ("John_Salley", "obama"), 4)


def run_extract(shard, spec, store_maps: str, tag: str, layers=None) -> dict[str, str]:
    spec = dict(spec)
    if layers:
        spec["layers"] = {k: spec["layers"][k] for k in layers}
    out = {k: str(shard / tag / f"{k}.parquet") for k in OUTPUTS}
    rank_layer = next(iter(spec["layers"]))
    options = stage_options(
        "extract",
        "dlib_resnet",
        spec=spec,
        device="cpu",
        levels=LEVELS,
        selections=("top1", "full"),
        rank_layer=rank_layer,
        rank_pixels=n_occluded(max(SIZES), 150 * 150),
        store_maps=store_maps,
    )
    extract_shard(str(shard / "aligned.parquet"), str(shard / "labels.parquet"), out=out, options=options, threads=2)
    return out


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_summaries_equal_recomputations_from_the_stored_maps(shard, dlib_spec):
    out = run_extract(shard, dlib_spec, "raw", "raw")
    maps = read_parquet(out["maps"]).to_pylist()
    assert len(maps) == 2 * 12 * 9  # 2 identities x 12 ordered pairs x 9 layers
    labels = {
        (r["identity"], r["image"]): np.frombuffer(r["labels"], np.uint8).reshape(150, 150)
        for r in read_parquet(shard / "labels.parquet").to_pylist()
    }
    frame = {
        (r["layer"], r["identity"], r["anchor"], r["positive"]): to_frame(
            torch.from_numpy(decode_map(r).copy())[None], 150, tuple(r["window"])
        )[0].numpy()
        for r in maps
    }
    # counts: a naive recount of every stored map
    counts = read_parquet(out["counts"]).to_pylist()
    assert len(counts) == len(maps) * len(selection_names(LEVELS))
    visible = set(visible_classes("landmarks"))
    got = {(r["layer"], r["identity"], r["anchor"], r["positive"], r["selection"]): r for r in counts}
    for key, f in frame.items():
        ref = naive_counts(f.reshape(-1), labels[key[1], key[2]].reshape(-1), LEVELS, 0.01, "active")
        for s, name in enumerate(selection_names(LEVELS)):
            row = got[key + (name,)]
            assert [row[c] for c in CLASS_COLUMNS] == [
                int(ref[s, c]) if c in visible else None for c in range(len(CLASS_COLUMNS))
            ], (key, name)
    # image maps: mean over positives of each selection's distribution (by hand, float64)
    images = read_parquet(out["image_maps"]).to_pylist()
    rank_layer = next(iter(dlib_spec["layers"]))
    assert {r["kind"] for r in images} == {"top1", "full", "mean"}
    assert {r["layer"] for r in images if r["kind"] == "mean"} == {rank_layer}
    for r in images:
        fs = [f.astype(np.float64) for k, f in frame.items() if k[:3] == (r["layer"], r["identity"], r["image"])]
        assert r["n_positives"] == len(fs) == 3
        want = []
        for f in fs:
            v = f.reshape(-1)
            if r["kind"] == "mean":
                want.append(v)
                continue
            keep = v >= 0.01
            if r["kind"] == "top1":
                k = int(np.ceil(keep.sum() / 100))
                keep = np.zeros_like(keep)
                keep[np.argsort(-v, kind="stable")[:k]] = True
            d = np.where(keep, v, 0)
            want.append(d / d.sum())
        got_map = np.frombuffer(r["map"], "<f4").reshape(-1)
        np.testing.assert_allclose(got_map, np.mean(want, 0), rtol=1e-5, atol=1e-9, err_msg=str(r["kind"]))
    # rankings: the stable descending order of the source layer's frame maps, up to the largest size
    ranks = read_parquet(out["rankings"]).to_pylist()
    assert len(ranks) == 24 and {r["layer"] for r in ranks} == {rank_layer}
    k = n_occluded(max(SIZES), 150 * 150)
    for r in ranks:
        f = frame[(rank_layer, r["identity"], r["anchor"], r["positive"])].reshape(-1)
        np.testing.assert_array_equal(np.frombuffer(r["pixels"], "<i4"), np.argsort(-f, kind="stable")[:k])
        assert r["n_relevant"] == int((f > 0).sum())


def test_map_storage_changes_only_the_maps(shard, dlib_spec):
    layers = list(dlib_spec["layers"])[:3]
    ref = run_extract(shard, dlib_spec, "raw", "mode_raw", layers)
    for mode in ("float16", "first_pair"):
        got = run_extract(shard, dlib_spec, mode, f"mode_{mode}", layers)
        for name in OUTPUTS[:-1]:
            assert sha(got[name]) == sha(ref[name]), (mode, name)
        raw = {(r["layer"], r["anchor"], r["positive"]): decode_map(r) for r in read_parquet(ref["maps"]).to_pylist()}
        stored = read_parquet(got["maps"]).to_pylist()
        if mode == "float16":
            assert len(stored) == len(raw) and {r["dtype"] for r in stored} == {"f2"}
            for r in stored:
                want = raw[(r["layer"], r["anchor"], r["positive"])]
                assert r["scale"] == want.max()
                np.testing.assert_allclose(decode_map(r), want, rtol=0, atol=2**-11 * want.max())
        else:
            # each identity's first ordered pair (by name), every layer, float32 as stored by "raw"
            assert len(stored) == 2 * len(layers)
            aligned = read_parquet(shard / "aligned.parquet").to_pylist()
            for r in stored:
                imgs = sorted(a["image"] for a in aligned if a["identity"] == r["identity"])
                assert (r["anchor"], r["positive"], r["dtype"]) == (imgs[0], imgs[1], "f4")
                np.testing.assert_array_equal(decode_map(r), raw[(r["layer"], r["anchor"], r["positive"])])
