"""The model-free controls on hand-made label frames with known answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from leam.core.baselines import centre_baseline, centre_shares, landmark_maps, match_support
from leam.core.classes import CLASS_NAMES
from leam.core.io import write_parquet
from leam.core.similarity import bhattacharyya, coarsen, emd_exact
from leam.core.tables import LABELS_SCHEMA

NOSE, FACE, EYE, BG = (CLASS_NAMES.index(c) for c in ("nose", "face", "right eye", "background"))


def _write_labels(path, frames: dict[tuple[str, str], np.ndarray]):
    rows = [
        {
            "identity": i,
            "image": m,
            "parser": "landmarks",
            "size": lab.shape[0],
            "labels": lab.astype(np.uint8).tobytes(),
        }
        for (i, m), lab in frames.items()
    ]
    write_parquet(pa.Table.from_pylist(rows, schema=LABELS_SCHEMA), path)


def test_centre_disc_and_gaussian_shares_on_a_known_frame():
    lab = np.full((21, 21), FACE)
    lab[9:12, 9:12] = NOSE  # the 3 x 3 block around the centre (10, 10)
    lab[2, 2] = EYE
    disc = centre_shares(lab, [1, 9, 13, 441], ["nose"])[:, 0]
    # 1: the centre; 9: the centre, 4 at distance 1, 4 at sqrt(2) = the block; 13: + 4 at distance 2
    assert disc == pytest.approx([100.0, 100.0, 100.0 * 9 / 13, 100.0 * 9 / 441])
    central = centre_shares(lab, [441], ["nose", "right eye"])[0, 0]
    assert central == pytest.approx(100.0 * 10 / 441)
    # the Gaussian: weights exp(-r^2 / (2 sigma^2)), sigma^2 = n / pi, summed by hand
    n = 9
    yy, xx = np.mgrid[0:21, 0:21]
    w = np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / (2 * n / np.pi))
    assert centre_shares(lab, [n], ["nose"])[0, 1] == pytest.approx(100 * w[9:12, 9:12].sum() / w.sum())


def test_centre_baseline_reads_label_files_and_answers_each_wanted_count(tmp_path):
    a = np.full((21, 21), BG)
    a[9:12, 9:12] = NOSE
    b = np.full((21, 21), FACE)
    _write_labels(tmp_path / "labels.parquet", {("p", "a.jpg"): a, ("p", "b.jpg"): b, ("q", "c.jpg"): a})
    t = centre_baseline([tmp_path / "labels.parquet"], {("p", "a.jpg"): {9, 13}, ("p", "b.jpg"): {9}}, 21).to_pylist()
    assert [(r["image"], r["n_pixels"]) for r in t] == [("a.jpg", 9), ("a.jpg", 13), ("b.jpg", 9)]
    assert [r["disc_nose_pct"] for r in t] == pytest.approx([100.0, 100.0 * 9 / 13, 0.0])
    assert t[0]["disc_central_pct"] == pytest.approx(100.0)


def test_geometry_baseline_landmark_maps_and_matched_support(tmp_path):
    s = 30
    lm_a = np.tile([[10.0, 12.0]], (68, 1))  # every landmark on one point: one Gaussian
    lm_b = np.tile([[13.0, 16.0]], (68, 1))  # the same, moved by (3, 4): 5 px
    rows = [
        {"identity": "x", "image": "a", "landmarks": lm_a.ravel().tolist()},
        {"identity": "x", "image": "b", "landmarks": lm_b.ravel().tolist()},
    ]
    schema = pa.schema([("identity", pa.string()), ("image", pa.string()), ("landmarks", pa.list_(pa.float64(), 136))])
    write_parquet(pa.Table.from_pylist(rows, schema=schema), tmp_path / "aligned.parquet")
    maps = landmark_maps([tmp_path / "aligned.parquet"], [("x", "a"), ("x", "b"), ("y", "none")], s, sigma=5.0)
    assert maps.shape == (3, s, s) and maps[:2].sum((1, 2)) == pytest.approx([1, 1]) and not maps[2].any()
    sig = 5.0 * s / 150
    yy, xx = np.mgrid[0:s, 0:s]
    g = np.exp(-((xx - 10) ** 2 + (yy - 12) ** 2) / (2 * sig**2))
    assert maps[0] == pytest.approx(g / g.sum(), abs=1e-6)
    # as sparse as the LEAM maps: one LEAM pixel keeps the peak alone; nine keep the 3 x 3 around it
    leam = np.zeros((2, s, s), np.float32)
    leam[0, 0, 0] = 1
    leam[1, :3, :3] = 1
    kept = match_support(maps[:2], leam)
    assert kept[0, 12, 10] == pytest.approx(1.0) and np.count_nonzero(kept[0]) == 1
    assert np.count_nonzero(kept[1]) == 9 and kept[1, 15:18, 12:15].sum() == pytest.approx(1.0)
    # two single-pixel maps 5 px apart: BC 0, EMD 5 (a 3-4-5 move) on the frame's own grid
    p, q = torch.from_numpy(kept[:1]).double(), torch.from_numpy(match_support(maps[1:2], leam[:1])).double()
    assert float(bhattacharyya(p, q)[0]) == 0.0
    assert emd_exact(coarsen(p, s)[0].numpy(), coarsen(q, s)[0].numpy(), s) == pytest.approx(5.0)
