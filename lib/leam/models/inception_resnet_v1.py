"""InceptionResnetV1 from facenet-pytorch itself (VGGFace2 / CASIA-WebFace checkpoints).

facenet-pytorch's own class is used, built without its downloader (``pretrained=None``), and the
published checkpoint (``20180402-114759-vggface2.pt``, ``20180408-102900-casia-webface.pt``) is
loaded strictly from a local file with ``weights_only=True``. Those files include the training
classifier (``logits``: 8631 classes for VGGFace2, 10575 for CASIA-WebFace), so the module is
built with that head and then switched to embedding mode. Input (B, 3, 160, 160),
``(pixel - 127.5) / 128``; output (B, 512), L2-normalised by facenet's forward.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from leam.models.checkpoint import load_state_dict_file

__all__ = ["build", "PAPER_LAYERS", "NUM_CLASSES"]

NUM_CLASSES = {"vggface2": 8631, "casia-webface": 10575}

#: the nine earliest convolutions in execution order (BasicConv2d.conv modules)
PAPER_LAYERS = {
    "conv2d_1a": "conv2d_1a.conv",
    "conv2d_2a": "conv2d_2a.conv",
    "conv2d_2b": "conv2d_2b.conv",
    "conv2d_3b": "conv2d_3b.conv",
    "conv2d_4a": "conv2d_4a.conv",
    "conv2d_4b": "conv2d_4b.conv",
    "r1_0.branch0": "repeat_1.0.branch0.conv",
    "r1_0.branch1_0": "repeat_1.0.branch1.0.conv",
    "r1_0.branch1_1": "repeat_1.0.branch1.1.conv",
}


def build(weights: str | Path, dataset: str = "vggface2") -> nn.Module:
    """Registry builder: facenet-pytorch InceptionResnetV1 with the local checkpoint (strict)."""
    from facenet_pytorch import InceptionResnetV1

    if dataset not in NUM_CLASSES:
        raise ValueError(f"dataset must be one of {sorted(NUM_CLASSES)}, not {dataset!r}")
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=NUM_CLASSES[dataset])
    model.load_state_dict(load_state_dict_file(weights, model), strict=True)
    model.classify = False  # embeddings (512-d, L2-normalised), not logits
    return model.eval()
