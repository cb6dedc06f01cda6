"""The paper's IR_CASIA numbers held by leam.core.paper, checked against a second transcription of the
paper's Tables 10, 11 and 9 (whose IR_CASIA columns Appendix B and Table 21 must agree with)."""

from __future__ import annotations

import pytest

from leam.core.paper import IR_CASIA_OCCLUSION, IR_CASIA_SHARES, LEVELS, OCCLUSION_SIZES

# Table 10 (full activation) and Table 11 (top 1 %), IR_CASIA column
TABLE_10 = {"face": 55.32, "hair": 12.09, "background": 10.95, "nose": 8.28, "neck": 2.24, "right eye": 0.56}
TABLE_11 = {"face": 50.52, "nose": 29.72, "background": 4.17, "hair": 4.43, "right eyebrow": 2.32, "left eye": 0.67}


def test_appendix_b_agrees_with_tables_10_and_11():
    assert len(LEVELS) == 15 and all(len(v) == 15 for v in IR_CASIA_SHARES.values())
    assert len(IR_CASIA_SHARES) == 19  # FaRL's classes
    for c, v in TABLE_10.items():
        assert IR_CASIA_SHARES[c][LEVELS.index(100)] == v
    for c, v in TABLE_11.items():
        assert IR_CASIA_SHARES[c][LEVELS.index(1)] == v
    for i in range(len(LEVELS)):  # every column is a distribution over the 19 classes
        assert sum(v[i] for v in IR_CASIA_SHARES.values()) == pytest.approx(100, abs=0.15)


def test_table_21_ir_casia_column():
    assert len(OCCLUSION_SIZES) == 12 and all(len(v) == 12 for v in IR_CASIA_OCCLUSION.values())
    i = OCCLUSION_SIZES.index(1)
    assert (IR_CASIA_OCCLUSION["leam"][i], IR_CASIA_OCCLUSION["random"][i]) == (0.1655, 0.0355)
    assert all(a > b for a, b in zip(IR_CASIA_OCCLUSION["leam"], IR_CASIA_OCCLUSION["random"], strict=True))
