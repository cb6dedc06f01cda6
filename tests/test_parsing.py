"""The offline landmark parser: FaRL ids where the landmarks say, absent classes absent."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import stage_options

from leam.core.classes import CLASS_NAMES, FARL_TAGS, N_CLASSES, UNPARSED, visible_classes
from leam.core.io import read_parquet
from leam.stages.align import align_shard
from leam.stages.detect import detect_shard
from leam.stages.parse import FarlParser, LandmarkParser, parse_shard


def test_farl_class_table():
    assert N_CLASSES == 20 and len(FARL_TAGS) == 19 and CLASS_NAMES[UNPARSED] == "unparsed"
    assert FARL_TAGS[:3] == ("background", "neck", "face") and FARL_TAGS[10] == "nose" and FARL_TAGS[18] == "neck_l"
    assert CLASS_NAMES[8] == "right eye" and CLASS_NAMES[11] == "inner mouth"


@pytest.fixture(scope="module")
def parsed(sample_entries, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parse")
    faces = detect_shard(sample_entries, tmp / "faces.parquet", options=stage_options("detect"))
    align_shard(faces, tmp / "aligned.parquet", options=stage_options("align"))
    parse_shard(
        tmp / "aligned.parquet", tmp / "labels.parquet", options=stage_options("parse")
    )  # from the file, streamed, as the rule does
    return read_parquet(tmp / "aligned.parquet"), read_parquet(tmp / "labels.parquet")


def test_labels_follow_the_landmarks(parsed):
    aligned, labels = parsed
    assert labels.num_rows == aligned.num_rows == 6
    for a, row in zip(aligned.to_pylist(), labels.to_pylist(), strict=True):
        lab = np.frombuffer(row["labels"], np.uint8).reshape(150, 150)
        pts = np.asarray(a["landmarks"]).reshape(68, 2)

        def at(p, lab=lab):
            x, y = np.round(p).astype(int)
            return lab[y, x]

        assert at(pts[36:42].mean(0)) == 8  # subject's right eye (image left)
        assert at(pts[42:48].mean(0)) == 9
        assert at(pts[29]) == 10  # nose bridge
        assert at(pts[51] + 0.35 * (pts[62] - pts[51])) == 13  # upper lip, between its outer and inner edge
        assert at(pts[19] + [0, 1]) == 6 and at(pts[24] + [0, 1]) == 7  # brows
        assert at(pts[36:48].mean(0) + [0, 0.25 * (pts[8, 1] - pts[27, 1])]) in (2, 10)  # cheek/nose, face
        assert lab[0, 0] == lab[0, 149] == UNPARSED  # corners: not known to be background
        assert not (lab == 0).any()  # the landmark parser never says "background"
        assert set(np.unique(lab)) <= set(visible_classes("landmarks"))
        face_share = (lab == 2).mean()
        assert 0.3 < face_share < 0.8


def test_polygons_paint_in_order():
    # a synthetic, symmetric face: every class is non-empty and the face is the largest region
    rng = np.random.default_rng(0)
    parser = LandmarkParser()
    jaw = np.stack(
        [40 + 70 * (1 - np.cos(np.linspace(0, np.pi, 17))) / 2, 60 + 70 * np.sin(np.linspace(0, np.pi, 17))], 1
    )
    pts = np.zeros((68, 2))
    pts[0:17] = jaw
    pts[17:22] = np.stack([np.linspace(45, 70, 5), np.full(5, 50.0)], 1)
    pts[22:27] = np.stack([np.linspace(80, 105, 5), np.full(5, 50.0)], 1)
    pts[27:31] = np.stack([np.full(4, 75.0), np.linspace(60, 85, 4)], 1)
    pts[31:36] = np.stack([np.linspace(65, 85, 5), np.full(5, 90.0)], 1)
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    pts[36:42] = np.stack([57 + 7 * np.cos(ang), 62 + 3 * np.sin(ang)], 1)
    pts[42:48] = np.stack([93 + 7 * np.cos(ang), 62 + 3 * np.sin(ang)], 1)
    ang12 = np.linspace(np.pi, 3 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([75 + 15 * np.cos(ang12), 105 + 7 * np.sin(ang12)], 1)
    ang8 = np.linspace(np.pi, 3 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([75 + 10 * np.cos(ang8), 105 + 3 * np.sin(ang8)], 1)
    pts += rng.normal(0, 0.01, pts.shape)
    lab = parser(pts, 150)
    areas = np.bincount(lab.ravel(), minlength=N_CLASSES)
    for c in parser.visible:
        assert areas[c] > 0, CLASS_NAMES[c]
    assert areas[2] == max(areas[1:UNPARSED])  # the face is the largest class it names
    assert areas[0] == areas[1] == areas[3] == areas[14] == 0  # background, neck, clothes, hair: invisible
    assert areas[UNPARSED] > 0


def _synthetic_face() -> np.ndarray:
    """A symmetric face in a 150 px frame: brows at y 50, nose base (33) at y 90, chin at y 130."""
    pts = np.zeros((68, 2))
    t = np.linspace(0, np.pi, 17)
    pts[0:17] = np.stack([40 + 70 * (1 - np.cos(t)) / 2, 60 + 70 * np.sin(t)], 1)
    pts[17:22] = np.stack([np.linspace(45, 70, 5), np.full(5, 50.0)], 1)
    pts[22:27] = np.stack([np.linspace(80, 105, 5), np.full(5, 50.0)], 1)
    pts[27:31] = np.stack([np.full(4, 75.0), np.linspace(60, 85, 4)], 1)
    pts[31:36] = np.stack([np.linspace(67, 83, 5), np.full(5, 90.0)], 1)
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    pts[36:42] = np.stack([57 + 7 * np.cos(ang), 62 + 3 * np.sin(ang)], 1)
    pts[39] = [64.0, 62.0]
    pts[42:48] = np.stack([93 + 7 * np.cos(ang), 62 + 3 * np.sin(ang)], 1)
    pts[42] = [86.0, 62.0]
    a12 = np.linspace(np.pi, 3 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([75 + 15 * np.cos(a12), 105 + 7 * np.sin(a12)], 1)
    a8 = np.linspace(np.pi, 3 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([75 + 10 * np.cos(a8), 105 + 3 * np.sin(a8)], 1)
    return pts


def test_forehead_up_to_the_estimated_hairline_is_face_and_hair_is_unparsed_not_background():
    """#15: forehead and hair pixels used to be counted as background. The facial thirds put the
    hairline above the brows (y 50) by the brows-to-nose-base height (90 - 50 = 40): y 10 at the
    midline, 0.6 x 40 above the brows at the temples."""
    lab = LandmarkParser()(_synthetic_face(), 150)
    assert lab[45, 75] == 2 and lab[15, 75] == 2  # forehead, up to the hairline
    assert lab[5, 75] == UNPARSED  # above it: hair (or background): unparsed
    assert lab[30, 47] == 2 and lab[20, 47] == UNPARSED  # at the temple the hairline is lower (50 - 24 = 26)
    assert lab[140, 10] == UNPARSED and lab[75, 5] == UNPARSED  # neck / background / ear side
    assert not (lab == 0).any()


def test_nose_covers_the_bridge_and_the_wings():
    """The nose is the bridge from the nasion, 0.55 x the inner-canthal distance wide (|86 - 64| = 22:
    about 12 px), widening to the wings, 1.3 x the nostril base (16 px: about 21 px) at the tip's
    height, over the nostril base."""
    lab = LandmarkParser()(_synthetic_face(), 150)
    row = lambda y: np.flatnonzero(lab[y] == 10)  # noqa: E731
    assert 10 <= len(row(61)) <= 14 and row(61).min() < 75 < row(61).max()  # the bridge below the nasion
    assert 19 <= len(row(84)) <= 23  # the wings at the tip's height
    assert lab[88, 75] == 10 and lab[95, 75] != 10  # down to the nostril base, not below


class _FakeFarl(torch.nn.Module):
    """Stands in for FaRL's TorchScript net: (B, 3, 448, 448) -> (logits (B, 19, 448, 448), x).

    Its "parse" is fixed in the warped 448 frame: face (2) in the central square, nose (10) in a
    small square around the centre; the pipeline must warp it back to the right place.
    """

    def __init__(self):
        super().__init__()
        lab = torch.zeros(448, 448, dtype=torch.long)
        lab[112:336, 112:336] = 2
        lab[208:240, 208:240] = 10
        self.register_buffer("logits", F.one_hot(lab, 19).permute(2, 0, 1).float()[None] * 10)

    def forward(self, x: torch.Tensor):
        return self.logits.expand(x.shape[0], -1, -1, -1), x


def test_farl_parser_through_pyfacer(parsed, tmp_path):
    weights = tmp_path / "farl.pt"
    with warnings.catch_warnings():  # FaRL ships TorchScript, deprecated in torch 2.14
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_FakeFarl()), str(weights))
    aligned, _ = parsed
    cfg = {"name": "farl", "weights": {"path": str(weights), "sha256": None, "url": None}}
    assert (
        parse_shard(aligned, tmp_path / "labels.parquet", options=stage_options("parse", parser=cfg, batch=4))
        == aligned.num_rows
    )  # 4: batches
    labels = read_parquet(tmp_path / "labels.parquet")
    assert labels.column("parser").to_pylist() == ["farl"] * aligned.num_rows
    for a, row in zip(aligned.to_pylist(), labels.to_pylist(), strict=True):
        lab = np.frombuffer(row["labels"], np.uint8).reshape(150, 150)
        pts = FarlParser.five_points(np.asarray(a["landmarks"]))
        # FaRL's celebm crop is centred on eye_avg + 0.1 * (mouth_avg - eye_avg) (pyfacer's get_quad)
        eye, mouth = pts[:2].mean(0), pts[3:].mean(0)
        cx, cy = np.round(eye + 0.1 * (mouth - eye)).astype(int)
        assert lab[cy, cx] == 10
        assert set(np.unique(lab)) == {0, 2, 10}
        assert lab[0, 0] == 0


def test_farl_weights_missing_is_a_clear_error(parsed, tmp_path):
    aligned, _ = parsed
    cfg = {"name": "farl", "weights": {"path": str(tmp_path / "none.pt"), "url": "https://example.org/farl.pt"}}
    from leam.models.loader import WeightsError

    with pytest.raises(
        WeightsError,
        match=r"parser: weight file not found: .*none.pt. Download it from "
        r"https://example.org/farl.pt, then set parser.weights.path",
    ):
        parse_shard(aligned, tmp_path / "labels.parquet", options=stage_options("parse", parser=cfg))
