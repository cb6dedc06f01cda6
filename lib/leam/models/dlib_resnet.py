"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) ported to PyTorch.

29 convolutions, 5.61 M parameters, 128-d descriptor (not L2-normalised; dlib compares with
Euclidean distance 0.6). Input: (B, 3, 150, 150) RGB, ``(pixel - mean_c) / 256`` with the means
stored in the file (122.782, 117.001, 104.298); the normalisation is done by the caller
(:mod:`leam.models` preprocessing), so the module takes already-normalised tensors.

Layout (module names -> output size at 150 px input)::

    conv1 7x7/2 pad 0 (32 ch, 72^2) -> affine1 -> relu -> maxpool 3x3/2 (35^2)
    layer1: 3 plain blocks, 32 ch (35^2)
    layer2: down block 64 ch (17^2), 3 plain
    layer3: down block 128 ch (8^2), 2 plain
    layer4: down block 256 ch (4^2), 2 plain
    layer5: down block 256 ch (2^2)
    mean over 2x2 -> fc 256->128, no bias

Block body: conv1 3x3 stride s -> affine1 -> relu -> conv2 3x3 -> affine2, padding 1 for stride 1
and 0 for stride 2 (dlib's default). Plain block: relu(body(x) + x). Down block:
relu(avgpool2x2/2(x) (+) body(x)), where (+) adds tensors of different shapes by zero-padding each
to the elementwise max shape at the high end (extra channels, bottom rows, right columns).
``affine`` is dlib's folded batch norm: gamma * x + beta per channel.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.models.dlib_dat import DlibFormatError, read_dlib_net

__all__ = ["DlibResNet", "load_dlib_resnet", "build", "DLIB_MEANS", "PAPER_LAYERS"]

DLIB_MEANS = (122.782, 117.001, 104.298)

#: The nine earliest convolutions (the paper analyses each model's nine earliest conv layers).
PAPER_LAYERS = {
    "conv1": "conv1",
    "l1_0.conv1": "layer1.0.conv1",
    "l1_0.conv2": "layer1.0.conv2",
    "l1_1.conv1": "layer1.1.conv1",
    "l1_1.conv2": "layer1.1.conv2",
    "l1_2.conv1": "layer1.2.conv1",
    "l1_2.conv2": "layer1.2.conv2",
    "l2_0.conv1": "layer2.0.conv1",
    "l2_0.conv2": "layer2.0.conv2",
}


class Affine(nn.Module):
    """Per-channel ``weight * x + bias`` on (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of two (B, C, H, W) tensors zero-padded to their max shape."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.down = stride != 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=0 if self.down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        if self.down:
            return F.relu(add_prev(F.avg_pool2d(x, 2, 2), y))
        return F.relu(y + x)


def _stage(cin: int, cout: int, n_plain: int, down: bool) -> nn.Sequential:
    blocks = [Block(cin, cout, 2)] if down else []
    blocks += [Block(cout, cout, 1) for _ in range(n_plain)]
    return nn.Sequential(*blocks)


class DlibResNet(nn.Module):
    """(B, 3, 150, 150) normalised RGB -> (B, 128) dlib face descriptor."""

    input_size = (150, 150)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine1 = Affine(32)
        self.layer1 = _stage(32, 32, 3, down=False)
        self.layer2 = _stage(32, 64, 3, down=True)
        self.layer3 = _stage(64, 128, 2, down=True)
        self.layer4 = _stage(128, 256, 2, down=True)
        self.layer5 = _stage(256, 256, 0, down=True)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)  # (B, 32, 35, 35)
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))  # (B, 256, 2, 2)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 128)


def load_dlib_resnet(path: str | Path) -> DlibResNet:
    """Build :class:`DlibResNet` with the weights of dlib's ``.dat`` file at ``path``.

    The file's conv/affine/fc records (input to output) are assigned to the module's Conv2d /
    Affine / Linear modules in definition order; every shape is checked.
    """
    net = read_dlib_net(path)
    model = DlibResNet()
    params = [layer for layer in net.layers if layer.kind in ("con", "affine", "fc")]
    targets = [m for m in model.modules() if isinstance(m, (nn.Conv2d, Affine, nn.Linear))]
    if len(params) != len(targets):
        raise DlibFormatError(f"{path}: {len(params)} parametrised layers, the port expects {len(targets)}")
    with torch.no_grad():
        for layer, mod in zip(params, targets, strict=True):
            p = torch.from_numpy(layer.fields["params"].reshape(-1))
            if isinstance(mod, nn.Conv2d):
                w = mod.weight
                if layer.kind != "con" or tuple(layer.fields["filters_shape"]) != tuple(w.shape):
                    raise DlibFormatError(
                        f"{path}: {layer.version} {layer.fields.get('filters_shape')} "
                        f"does not fit conv {tuple(w.shape)}"
                    )
                if layer.fields["stride"] != mod.stride or layer.fields["padding"] != mod.padding:
                    raise DlibFormatError(
                        f"{path}: stride/padding {layer.fields['stride']}/"
                        f"{layer.fields['padding']} != {mod.stride}/{mod.padding}"
                    )
                w.copy_(p[: w.numel()].view_as(w))
                assert mod.bias is not None  # every convolution of the port has a bias, as dlib's
                mod.bias.copy_(p[w.numel() :])
            elif isinstance(mod, Affine):
                c = mod.weight.numel()
                if layer.kind != "affine" or p.numel() != 2 * c:
                    raise DlibFormatError(f"{path}: {layer.version} with {p.numel()} values for affine({c})")
                mod.weight.copy_(p[:c])
                mod.bias.copy_(p[c:])
            else:
                if layer.kind != "fc" or layer.fields["bias_mode"] != 1:
                    raise DlibFormatError(f"{path}: expected fc without bias, got {layer.version}")
                mod.weight.copy_(p.view(layer.fields["num_inputs"], layer.fields["num_outputs"]).T)
    if tuple(round(m, 3) for m in net.input_means) != DLIB_MEANS:
        raise DlibFormatError(f"{path}: input means {net.input_means} != {DLIB_MEANS}")
    return model.eval()


def build(weights: str | Path) -> DlibResNet:
    """Registry builder (``leam.models.dlib_resnet:build``): the port with the file's weights."""
    return load_dlib_resnet(weights)
