"""Map codec, ranking, normalisation and resizing into the frame (against OpenCV, what pytorch-grad-cam uses)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from leam.core.maps import EPS, normalise, to_frame


def test_normalise_formula():
    rng = np.random.default_rng(0)
    m = rng.random((4, 7, 9)) * 3 + 2
    got = normalise(torch.from_numpy(m)).numpy()
    for i in range(4):
        ref = (m[i] - m[i].min()) / (m[i].max() - m[i].min() + EPS)
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-15)
    assert normalise(torch.zeros(1, 3, 3)).abs().max() == 0  # a blank map stays blank


def test_to_frame_matches_opencv_inter_linear():
    rng = np.random.default_rng(1)
    for h, w in [(72, 72), (35, 35), (17, 17), (150, 150), (7, 11)]:
        m = rng.random((3, h, w)).astype(np.float32)
        got = to_frame(torch.from_numpy(m), 150).numpy()
        for i in range(3):
            n = (m[i] - m[i].min()) / (1e-7 + (m[i] - m[i].min()).max())
            ref = cv2.resize(n, (150, 150), interpolation=cv2.INTER_LINEAR)
            # OpenCV interpolates float32 in float32 with float32 weights: ~5e-6 apart from torch
            np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-5, err_msg=f"{h}x{w}")
        assert got.min() >= 0 and got.max() <= 1


def test_codec_round_trip_one_map_and_a_column():
    import pyarrow as pa

    from leam.core.maps import decode_map, decode_maps, encode_map

    rng = np.random.default_rng(0)
    maps = rng.random((5, 7, 9)).astype(np.float32)
    col = pa.array([encode_map(m) for m in maps], pa.binary())
    np.testing.assert_array_equal(decode_maps(col, 7, 9), maps)
    np.testing.assert_array_equal(decode_maps(pa.chunked_array([col.slice(0, 2), col.slice(2)]), 7, 9), maps)
    np.testing.assert_array_equal(decode_maps([encode_map(m) for m in maps], 7, 9), maps)
    row = {"map": encode_map(maps[1], "f2"), "height": 7, "width": 9, "dtype": "f2"}
    np.testing.assert_array_equal(decode_map(row), maps[1].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="7x8"):
        decode_maps(col, 7, 8)


def test_column_encoder_equals_the_per_map_encoder(monkeypatch):
    import leam.core.maps as M

    rng = np.random.default_rng(1)
    maps = rng.random((7, 3, 5)).astype(np.float32)
    for dtype in ("f4", "f2"):
        assert M.encode_maps(maps, dtype).to_pylist() == [M.encode_map(m, dtype) for m in maps]
    ranks = rng.integers(0, 10**6, (4, 6)).astype(np.int64)
    assert M.encode_maps(ranks, "i4").to_pylist() == [r.astype("<i4").tobytes() for r in ranks]
    # binary's offsets are int32: columns past 2 GiB are split into chunks (here: past 2 maps' bytes)
    monkeypatch.setattr(M, "_MAX_CHUNK_BYTES", 2 * maps[0].nbytes + 1)
    col = M.encode_maps(maps)
    assert [len(c) for c in col.chunks] == [2, 2, 2, 1]
    np.testing.assert_array_equal(M.decode_maps(col, 3, 5), maps)
    assert len(M.encode_maps(maps[:0])) == 0


@pytest.mark.parametrize("k", [0, 1, 5, 37, 400])
def test_ranking_is_a_stable_descending_sort(k):
    from leam.core.maps import rank_below, top_indices, top_mask

    rng = np.random.default_rng(k)
    v = np.round(rng.random((6, 400)) * 8) / 8  # many ties
    v[2] = 0.5  # all tied
    want = np.argsort(-v, axis=1, kind="stable")[:, :k]
    got = top_indices(torch.from_numpy(v), k).numpy()
    np.testing.assert_array_equal(got, want)
    mask = top_mask(torch.from_numpy(v).reshape(6, 20, 20), k).reshape(6, -1).numpy()
    assert mask.sum() == 6 * k and all(mask[i, want[i]].all() for i in range(6))
    sizes = torch.tensor([0, 1, k, k // 2, 3, 400])
    below = rank_below(torch.from_numpy(v), sizes).numpy()
    for i, s in enumerate(sizes.tolist()):
        assert sorted(np.flatnonzero(below[i])) == sorted(np.argsort(-v[i], kind="stable")[:s])
    # one shared ranking: every shorter request after a longer one is a prefix of it; a longer one recomputes
    from leam.core.maps import Ranking

    full = np.argsort(-v, axis=1, kind="stable")
    r = Ranking(torch.from_numpy(v))
    for kk in (k, k // 3, 0, min(400, 2 * k + 7), 1):
        np.testing.assert_array_equal(r.top(kk).numpy(), full[:, :kk])
    assert r.top(10**6).shape == (6, 400)
