"""Map normalisation and resizing into the aligned frame, batched on the maps' device.

Normalisation is LayerCAM's (and pytorch-grad-cam's ``scale_cam_image``): per map, subtract the
minimum and divide by ``max + 1e-7``, at layer resolution; then bilinear resize to the frame
(half-pixel centres, ``align_corners=False``, no antialiasing: the same sampling as OpenCV's
``INTER_LINEAR`` when upsampling). Values stay in [0, 1].
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .window import paste

__all__ = ["normalise", "to_frame", "decode_map", "map_window", "EPS"]

EPS = 1e-7


def normalise(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(P, h, w) raw maps -> (P, h, w) in [0, 1]: (m - min) / (max(m - min) + eps) per map.

    ``eps`` is pytorch-grad-cam's 1e-7 (torchcam uses 1e-8).
    """
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(dim=1, keepdim=True).values
    flat = flat - lo
    hi = flat.max(dim=1, keepdim=True).values
    return (flat / (hi + eps)).reshape(maps.shape)


def to_frame(maps: torch.Tensor, size: int, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(P, h, w) raw maps -> (P, size, size) normalised maps in the aligned frame.

    ``window``: the frame box the model saw (:mod:`leam.window`); None: the whole frame. Frame
    pixels outside the window get 0.
    """
    return paste(normalise(maps), tuple(window) if window is not None else (0, 0, size, size), size)


def decode_map(row: Mapping) -> np.ndarray:
    """A maps-table row -> its raw map, (height, width) float32 (stored little-endian)."""
    return np.frombuffer(row["map"], "<f4").reshape(row["height"], row["width"])


def map_window(row: Mapping, size: int) -> tuple[int, int, int, int]:
    """The frame box a maps-table row's map covers (the whole ``size`` frame for old tables)."""
    w = row.get("window")
    return tuple(w) if w is not None else (0, 0, size, size)
