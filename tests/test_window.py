"""Model windows (leam.core.window): the box of the aligned frame a model sees, and maps pasted back."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from leam.core.maps import normalise, to_frame
from leam.core.window import ARCFACE_112, chip_points, crop, input_window, paste


def test_chip_is_the_whole_frame_and_to_frame_is_the_plain_resize():
    assert input_window("chip", (112, 112), 150, 0.25) == (0, 0, 150, 150)
    maps = torch.rand(3, 14, 14, dtype=torch.float64)
    old = F.interpolate(normalise(maps)[:, None], size=(150, 150), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(to_frame(maps, 150), old)
    assert torch.equal(to_frame(maps, 150, (0, 0, 150, 150)), old)


def test_arcface_window_puts_dlibs_mean_face_on_the_template():
    """Independent fit: numpy least squares of input = s * frame + t on the five points."""
    for size, padding, inp in [(150, 0.25, 112), (150, 0.25, 224), (200, 0.3, 112)]:
        x0, y0, x1, y1 = input_window("arcface", (inp, inp), size, padding)
        src = chip_points(size, padding) + 0.5
        dst = (ARCFACE_112 + 0.5) * inp / 112
        a = np.zeros((10, 3))
        a[0::2, 0], a[0::2, 1] = src[:, 0], 1
        a[1::2, 0], a[1::2, 2] = src[:, 1], 1
        s, tx, ty = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)[0]
        assert abs(x0 - (-tx / s)) <= 0.5 and abs(y0 - (-ty / s)) <= 0.5
        assert abs((x1 - x0) - inp / s) <= 1 and abs((y1 - y0) - inp / s) <= 1
        # the five points land within 2 pixels (of a 112-px input) of the template: the mean face
        # and the template differ in shape, not by more
        pts = (src - [x0, y0]) * inp / (x1 - x0)
        assert np.abs(pts - dst).max() * 112 / inp < 2, (size, padding, inp)
    # dlib's chip has the eyes high; the template lower: the window reaches above the frame
    assert input_window("arcface", (112, 112), 150, 0.25) == (-8, -30, 155, 133)


def test_crop_and_paste_keep_a_pixel_in_place_and_zero_outside():
    window = (-8, -30, 155, 133)  # 163 x 163
    frame = torch.zeros(1, 1, 150, 150, dtype=torch.float64)
    frame[0, 0, 40, 70] = 1.0
    seen = crop(frame, window, (163, 163))  # same size: no resampling
    assert seen.shape == (1, 1, 163, 163)
    assert seen[0, 0, 40 + 30, 70 + 8] == 1 and seen.sum() == 1
    assert (seen[0, 0, :30] == 0).all()  # rows above the frame are black
    back = paste(seen[:, 0], window, 150)
    assert torch.equal(back[0], frame[0, 0])
    # a map at layer resolution covering the window: constant inside, zero outside
    pasted = paste(torch.ones(1, 7, 7, dtype=torch.float64), window, 150)[0]
    assert (pasted[:133] == 1).all() and (pasted[133:] == 0).all()
    assert (pasted[:, :150] == 1)[:133].all()


def test_model_input_is_the_window_resized():
    from leam.models.loader import FaceModel

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8))
    m = FaceModel("m", torch.nn.Identity(), (112, 112), (0.0,) * 3, (1.0,) * 3, {}, alignment="arcface")
    x = m.preprocess(frames)
    window = (-8, -30, 155, 133)
    padded = F.pad(frames.permute(0, 3, 1, 2).float(), (8, 5, 30, 0))[..., :163, :163]  # x 0..162, y -30..132
    ref = F.interpolate(padded, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    assert m.window(150) == window
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-4)
