"""The window of the aligned frame a model sees, and the way back for its maps.

Every raster of a study lives in the identity's aligned frame (``align.size`` px square, dlib's
face-chip geometry, :mod:`leam.stages.align`). A model sees one window of that frame, an integer box
``(x0, y0, x1, y1)`` of frame pixels (it may reach past the frame: those pixels are black),
resized to its input size; a LEAM map at any layer covers the same window and is resized back
onto it, zero outside. The window follows the alignment the model was trained with
(``models.<name>.alignment``):

* ``chip``: the whole frame, ``(0, 0, S, S)`` -- dlib's recognition chip (150 px, padding 0.25),
  what dlib's ResNet was trained on;
* ``arcface``: insightface's 5-point template (``ARCFACE_112``, eyes, nose tip, mouth corners of a
  112 x 112 crop, scaled to the input size), placed on the frame by the scale and shift that fit
  it best to the same five points of dlib's mean face in the chip (``chip_points``); no rotation,
  since the frame's eyes are level. At 150 px / padding 0.25 it is the box (-8, -30, 155, 133):
  the eyes sit lower than in the chip, 30 rows above the frame are black and the chin is cut.
  MobileFace (an insightface-style 112-px model) separates the dlib-johns people far better in it
  (AUC 0.998 vs 0.882 with the chip; ``benchmarks/alignment.py``).

* ``facenet``: facenet's MTCNN box with its 32-px margin at 160 px (:data:`FACENET_MARGIN`), the box
  placed on dlib's mean face (:data:`FACENET_SHIFT`); at 150 px / padding 0.25 the box
  (12, 22, 138, 148): the face larger than in the chip, the top of the forehead out.

Both directions are the same resize the chip alignment always used: crop (pad with black) at
frame resolution, then ``F.interpolate`` bilinear, half-pixel centres (antialiased when shrinking
photos, plain when growing maps), so ``chip`` is exactly the frame resize.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ALIGNMENTS", "ARCFACE_112", "DLIB_MEAN_FACE", "chip_points", "input_window", "crop", "paste"]

#: alignments a model can declare
ALIGNMENTS = ("chip", "arcface", "facenet")

#: facenet's crop (davidsandberg/facenet ``align_dataset_mtcnn``, the crop its models were trained and
#: evaluated on): the MTCNN face box with a 32 px margin at a 160 px output, i.e. the box is 128 of
#: the 160 px. leam places the box on dlib's mean face: MTCNN's box spans, across, the outer brow
#: ends and, down, from the brows to the chin, which is dlib's mean-face square (brows to lower lip)
#: moved down by ``FACENET_SHIFT`` of its side
FACENET_MARGIN = 32 / 160
FACENET_SHIFT = 0.1

#: insightface's ``arcface_dst``: left eye, right eye, nose tip, left and right mouth corner of a
#: 112 x 112 crop (pixel centres at integers)
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

#: dlib's mean face (``get_face_chip_details``): landmarks 17-67 in the unit square, x then y
DLIB_MEAN_FACE = np.array(
    [
        [
            0.000213256,
            0.0752622,
            0.18113,
            0.29077,
            0.393397,
            0.586856,
            0.689483,
            0.799124,
            0.904991,
            0.98004,
            0.490127,
            0.490127,
            0.490127,
            0.490127,
            0.36688,
            0.426036,
            0.490127,
            0.554217,
            0.613373,
            0.121737,
            0.187122,
            0.265825,
            0.334606,
            0.260918,
            0.182743,
            0.645647,
            0.714428,
            0.793132,
            0.858516,
            0.79751,
            0.719335,
            0.254149,
            0.340985,
            0.428858,
            0.490127,
            0.551395,
            0.639268,
            0.726104,
            0.642159,
            0.556721,
            0.490127,
            0.423532,
            0.338094,
            0.290379,
            0.428096,
            0.490127,
            0.552157,
            0.689874,
            0.553364,
            0.490127,
            0.42689,
        ],
        [
            0.106454,
            0.038915,
            0.0187482,
            0.0344891,
            0.0773906,
            0.0773906,
            0.0344891,
            0.0187482,
            0.038915,
            0.106454,
            0.203352,
            0.307009,
            0.409805,
            0.515625,
            0.587326,
            0.609345,
            0.628106,
            0.609345,
            0.587326,
            0.216423,
            0.178758,
            0.179852,
            0.231733,
            0.245099,
            0.244077,
            0.231733,
            0.179852,
            0.178758,
            0.216423,
            0.244077,
            0.245099,
            0.780233,
            0.745405,
            0.727388,
            0.742578,
            0.727388,
            0.745405,
            0.780233,
            0.864805,
            0.902192,
            0.909281,
            0.902192,
            0.864805,
            0.784792,
            0.778746,
            0.785343,
            0.778746,
            0.784792,
            0.824182,
            0.831803,
            0.824182,
        ],
    ]
).T  # (51, 2)


def chip_points(size: int, padding: float) -> np.ndarray:
    """(5, 2) frame pixels of dlib's mean face: eye centres (36-41, 42-47), nose tip (30), mouth
    corners (48, 54), as :func:`dlib.get_face_chip_details` places them in a ``size`` chip."""
    pts = (padding + DLIB_MEAN_FACE) / (2 * padding + 1) * size  # landmarks 17..67
    lm = {i: pts[i - 17] for i in range(17, 68)}
    return np.array(
        [np.mean([lm[i] for i in range(36, 42)], 0), np.mean([lm[i] for i in range(42, 48)], 0), lm[30], lm[48], lm[54]]
    )


def input_window(
    alignment: str, input_size: tuple[int, int] | list[int], size: int, padding: float
) -> tuple[int, int, int, int]:
    """The frame box ``(x0, y0, x1, y1)`` (integer pixel edges) a model of ``alignment`` sees.

    ``input_size``: the model's (height, width); ``size``/``padding``: the aligned frame's.
    """
    if alignment == "chip":
        return (0, 0, size, size)
    if alignment == "facenet":
        unit = size / (2 * padding + 1)  # the mean-face square's side in frame pixels
        side = unit / (1 - FACENET_MARGIN)  # the square with the margin on each side
        cx, cy = size / 2, size / 2 + FACENET_SHIFT * unit
        x0, y0 = cx - side / 2, cy - side / 2
        return (int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side)))
    if alignment != "arcface":
        raise ValueError(f"unknown alignment {alignment!r}; known: {', '.join(ALIGNMENTS)}")
    h, w = input_size
    # edge coordinates (pixel i spans [i, i + 1]): centres + 0.5; template scaled to the input
    dst = (ARCFACE_112 + 0.5) * np.array([w / 112.0, h / 112.0])
    src = chip_points(size, padding) + 0.5
    ds, dd = src - src.mean(0), dst - dst.mean(0)
    s = float((ds * dd).sum() / (ds * ds).sum())  # input px per frame px
    t = dst.mean(0) - s * src.mean(0)
    x0, y0 = -t / s
    return (int(round(x0)), int(round(y0)), int(round(x0 + w / s)), int(round(y0 + h / s)))


def _pad_crop(x: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    """(..., H, W) -> (..., y1 - y0, x1 - x0): the window, zeros where it leaves ``x``."""
    x0, y0, x1, y1 = window
    h, w = x.shape[-2:]
    x = F.pad(x, (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h)))
    ox, oy = max(0, -x0), max(0, -y0)
    return x[..., y0 + oy : y1 + oy, x0 + ox : x1 + ox]


def crop(frames: torch.Tensor, window: tuple[int, int, int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, S, S) float frames -> (B, C, H, W): the window, black outside the frame, resized
    (bilinear, antialiased) to ``out_size`` = (H, W)."""
    x = _pad_crop(frames, window)
    if tuple(x.shape[-2:]) == tuple(out_size):
        return x
    return F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False, antialias=True)


def paste(maps: torch.Tensor, window: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """(P, h, w) maps covering ``window`` -> (P, size, size) frame rasters, zero outside the window.

    Bilinear, half-pixel centres, no antialiasing (OpenCV's ``INTER_LINEAR`` when growing).
    """
    x0, y0, x1, y1 = window
    m = maps
    if tuple(m.shape[-2:]) != (y1 - y0, x1 - x0):
        m = F.interpolate(m[:, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[:, 0]
    if window == (0, 0, size, size):
        return m
    return _pad_crop(m, (-x0, -y0, size - x0, size - y0))
