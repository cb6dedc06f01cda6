"""IResNet face backbones in insightface's ``arcface_torch`` layout (ArcFace / CosFace model zoo).

Attribute names are the published checkpoint keys (``backbone.pth``: ``conv1``, ``bn1``,
``prelu``, ``layer1..4``, ``bn2``, ``dropout``, ``fc``, ``features``; shortcuts
``layerN.i.downsample.0/1``), so ``load_state_dict(strict=True)`` needs no renaming. Variants
differ only in block counts. Input (B, 3, 112, 112) RGB scaled to [-1, 1]
(``(pixel - 127.5) / 127.5``); output (B, 512), not normalised. The head is tied to 112 px input:
``fc`` takes 512 x 7 x 7 features.

Block (IBasicBlock): bn1 -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (stride s) -> bn3, plus the
input or its downsample (1x1 conv stride s + BN); no activation after the sum.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from leam.models.checkpoint import load_state_dict_file

__all__ = ["IResNet", "IBasicBlock", "ARCHS", "iresnet", "build", "PAPER_LAYERS"]

#: blocks per stage
ARCHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6)}

#: the paper's nine layers for every IResNet (same names across depths)
PAPER_LAYERS = {
    "conv1": "conv1",
    "l1_0.conv1": "layer1.0.conv1",
    "l1_0.conv2": "layer1.0.conv2",
    "l1_1.conv1": "layer1.1.conv1",
    "l1_1.conv2": "layer1.1.conv2",
    "l2_0.conv1": "layer2.0.conv1",
    "l2_0.conv2": "layer2.0.conv2",
    "l2_1.conv1": "layer2.1.conv1",
    "l2_1.conv2": "layer2.1.conv2",
}


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = _bn(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = _bn(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), _bn(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(B, 3, 112, 112) in [-1, 1] -> (B, num_features) embeddings."""

    fc_scale = 7 * 7
    layer1: nn.Sequential  # made in __init__ by name, from ``blocks``
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, blocks: tuple[int, int, int, int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = _bn(64)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        inplanes = 64
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True), 1):
            stage = [IBasicBlock(inplanes, w, 2)] + [IBasicBlock(w, w, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            inplanes = w
        self.bn2 = _bn(512)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.dropout(torch.flatten(self.bn2(x), 1))  # (B, 25088)
        return self.features(self.fc(x))  # (B, 512)


def iresnet(arch: str = "r50", **kwargs) -> IResNet:
    """Factory: ``iresnet("r18")`` ... ``iresnet("r200")``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown IResNet arch {arch!r}; choose one of {sorted(ARCHS)}")
    return IResNet(ARCHS[arch], **kwargs)


def build(weights: str | Path, arch: str = "r50", num_features: int = 512) -> IResNet:
    """Registry builder: IResNet ``arch`` with the arcface_torch checkpoint at ``weights`` (strict)."""
    with torch.device("meta"):  # no random initialisation: every tensor comes from the checkpoint
        model = iresnet(arch, num_features=num_features)
    model.load_state_dict(load_state_dict_file(weights, model), strict=True, assign=True)
    return model.float().eval()
