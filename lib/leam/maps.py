"""Map normalisation and resizing into the aligned frame, batched on the maps' device.

Normalisation is LayerCAM's (and pytorch-grad-cam's ``scale_cam_image``): per map, subtract the
minimum and divide by ``max + 1e-7``, at layer resolution; then bilinear resize to the frame
(half-pixel centres, ``align_corners=False``, no antialiasing: the same sampling as OpenCV's
``INTER_LINEAR`` when upsampling). Values stay in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalise", "to_frame", "EPS"]

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


def to_frame(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(P, h, w) raw maps -> (P, size, size) normalised maps in the aligned frame."""
    m = normalise(maps)
    if tuple(m.shape[-2:]) == (size, size):
        return m
    return F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
