"""VGG-Face (Parkhi et al. 2015), VGG-16, in the layout of Albanie's PyTorch port ``vgg_face_dag``.

Attribute names are that checkpoint's keys (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``,
``fc8``). Input (B, 3, 224, 224) RGB, ``pixel - mean`` with mean (129.186, 104.762, 93.594) and
std 1 on the 0-255 scale; the embedding is the 4096-d ``fc7`` output after its ReLU (the face
descriptor of the VGG-Face paper); ``fc8`` (2622 identities) is kept only so the checkpoint loads
strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.models.checkpoint import load_state_dict_file

__all__ = ["VggFace", "build", "PAPER_LAYERS", "MEAN"]

MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

PAPER_LAYERS = {
    name: name
    for name in ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2")
}


class VggFace(nn.Module):
    """(B, 3, 224, 224) mean-subtracted RGB -> (B, 4096) fc7 descriptors."""

    def __init__(self, num_classes: int = 2622):
        super().__init__()
        cin = 3
        self._convs: list[list[str]] = []
        for b, (width, n) in enumerate(_BLOCKS, 1):
            names = []
            for i in range(1, n + 1):
                setattr(self, f"conv{b}_{i}", nn.Conv2d(cin, width, 3, 1, 1))
                names.append(f"conv{b}_{i}")
                cin = width
            self._convs.append(names)
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for names in self._convs:
            for name in names:
                x = F.relu(getattr(self, name)(x))
            x = F.max_pool2d(x, 2, 2)  # (B, C, H/2, W/2)
        x = F.relu(self.fc6(torch.flatten(x, 1)))  # (B, 4096); dropout is identity in eval
        return F.relu(self.fc7(x))  # (B, 4096)


def build(weights: str | Path, num_classes: int = 2622) -> VggFace:
    """Registry builder: VGG-Face with the ``vgg_face_dag.pth`` state dict at ``weights`` (strict)."""
    model = VggFace(num_classes)
    model.load_state_dict(load_state_dict_file(weights, model), strict=True)
    return model.eval()
