"""Normalisation and resizing into the frame, against OpenCV (what pytorch-grad-cam uses)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from leam.maps import EPS, normalise, to_frame


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
