"""The PyTorch port of dlib's face-recognition ResNet against dlib itself, on every real photo."""

from __future__ import annotations

import dlib
import numpy as np
import pytest
import torch
from conftest import DLIB_68

from leam.core.images import load_rgb
from leam.models.dlib_resnet import DLIB_MEANS, DlibResNet, load_dlib_resnet
from leam.models.loader import load_model
from leam.models.resources import package_file


@pytest.fixture(scope="module")
def dlib_chips(sample_entries, dlib_net_path):
    """(name, 150x150 dlib chip, dlib's own descriptor) for every sample photo."""
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(package_file("face_recognition_models", DLIB_68)))
    fr = dlib.face_recognition_model_v1(str(dlib_net_path))
    out = []
    for e in sample_entries:
        rgb = load_rgb(e.path).rgb
        faces = det(rgb, 1)
        assert len(faces) == 1, e.path
        shape = sp(rgb, faces[0])
        # what compute_face_descriptor feeds the net: get_face_chip(size=150, padding=0.25)
        chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        desc = np.array(fr.compute_face_descriptor(rgb, shape, 0))
        out.append((f"{e.identity}/{e.image}", chip, desc))
    assert len(out) == 7
    return out


def _port(model: DlibResNet, chip: np.ndarray, dtype) -> np.ndarray:
    model = model.to(dtype)
    x = torch.from_numpy(chip).permute(2, 0, 1)[None].to(dtype)
    x = (x - torch.tensor(DLIB_MEANS, dtype=dtype)[:, None, None]) / 256
    with torch.no_grad():
        return model(x)[0].double().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_port_equals_dlib_on_every_real_photo(dlib_chips, dlib_net_path, dtype):
    model = load_dlib_resnet(dlib_net_path)
    worst = 0.0
    for name, chip, desc in dlib_chips:
        ours = _port(model, chip, dtype)
        diff = float(np.abs(ours - desc).max())
        worst = max(worst, diff)
        assert diff <= 1e-4, f"{name}: max |port - dlib| = {diff:.3g}"
        # the descriptor is dlib's: not unit norm (about 1.4)
        assert 1.2 < np.linalg.norm(desc) < 1.6
    print(f"max |port - dlib| over 7 photos ({dtype}): {worst:.3g}")


def test_port_descriptor_distances_match_dlib_decisions(dlib_chips, dlib_net_path):
    """Same-person pairs under dlib's 0.6 threshold, Biden vs Obama over it, with the port."""
    model = load_dlib_resnet(dlib_net_path)
    desc = {name: _port(model, chip, torch.float32) for name, chip, _ in dlib_chips}
    for a in desc:
        for b in desc:
            if a < b:
                same = a.split("/")[0] == b.split("/")[0]
                d = np.linalg.norm(desc[a] - desc[b])
                assert (d < 0.6) == same, (a, b, d)


def test_registry_builds_the_port_with_preprocessing(dlib_chips, dlib_spec):
    """load_model + FaceModel.preprocess on uint8 frames reproduce dlib (the pipeline's path)."""
    fm = load_model("dlib_resnet", dlib_spec)
    assert fm.input_size == (150, 150)
    assert not any(p.requires_grad for p in fm.module.parameters())
    frames = torch.from_numpy(np.stack([c for _, c, _ in dlib_chips]))
    with torch.no_grad():
        emb = fm.module(fm.preprocess(frames)).double().numpy()
    ref = np.stack([d for _, _, d in dlib_chips])
    assert np.abs(emb - ref).max() <= 1e-4


def test_parameter_count_and_shapes():
    m = DlibResNet()
    assert sum(p.numel() for p in m.parameters()) == 5_614_592
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 29
    acts = {}
    for name in ("conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1", "layer5.0.conv1"):
        m.get_submodule(name).register_forward_hook(lambda mod, i, o, n=name: acts.__setitem__(n, tuple(o.shape)))
    out = m(torch.zeros(2, 3, 150, 150))
    assert out.shape == (2, 128)
    assert acts == {
        "conv1": (2, 32, 72, 72),
        "layer1.0.conv1": (2, 32, 35, 35),
        "layer2.0.conv1": (2, 64, 17, 17),
        "layer3.0.conv1": (2, 128, 8, 8),
        "layer4.0.conv1": (2, 256, 3, 3),
        "layer5.0.conv1": (2, 256, 1, 1),
    }
