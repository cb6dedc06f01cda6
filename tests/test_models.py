"""Model registry: weights located and checked, never downloaded; clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from leam.models.loader import WeightsError, load_model


def test_missing_weights_message_names_file_source_hash_and_key(dlib_spec, tmp_path):
    spec = copy.deepcopy(dlib_spec)
    spec["weights"]["path"] = str(tmp_path / "nowhere" / "model.dat")
    with pytest.raises(WeightsError) as e:
        load_model("dlib_resnet", spec)
    msg = str(e.value)
    assert msg == (
        f"model 'dlib_resnet': weight file not found: {tmp_path / 'nowhere' / 'model.dat'}. "
        f"Download it from {spec['weights']['url']} (sha256 {spec['weights']['sha256']}), "
        "then set models.dlib_resnet.weights.path in config/config.yaml to its location."
    )


def test_wrong_file_is_refused_before_loading(dlib_spec, tmp_path):
    spec = copy.deepcopy(dlib_spec)
    fake = tmp_path / "model.dat"
    fake.write_bytes(b"not a model")
    spec["weights"]["path"] = str(fake)
    with pytest.raises(WeightsError, match=r"has sha256 [0-9a-f]{64}, expected 55533b28"):
        load_model("dlib_resnet", spec)


def test_relative_paths_resolve_against_base_dir(dlib_spec, dlib_net_path, tmp_path):
    spec = copy.deepcopy(dlib_spec)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "net.dat").write_bytes(dlib_net_path.read_bytes())
    spec["weights"]["path"] = "w/net.dat"
    m = load_model("dlib_resnet", spec, base_dir=tmp_path)
    assert isinstance(m.module, torch.nn.Module)


def test_builder_and_layer_errors(dlib_spec):
    spec = copy.deepcopy(dlib_spec)
    spec["builder"] = "leam.models.nothing_here:build"
    with pytest.raises(ValueError, match="cannot import module 'leam.models.nothing_here'"):
        load_model("dlib_resnet", spec)
    spec = copy.deepcopy(dlib_spec)
    spec["layers"] = {"x": "layer1.9.conv1"}
    with pytest.raises(
        ValueError,
        match=r"models.dlib_resnet.layers.x: layer 'layer1.9.conv1' is not a module of "
        r"DlibResNet; modules under 'layer1': layer1.0, layer1.0.conv1",
    ):
        load_model("dlib_resnet", spec)


def test_preflight_names_the_key_and_the_modules_that_exist(dlib_spec):
    """#12 case 7: a wrong layer used to list 12 module names, none under layer2, and no config key;
    a device this machine lacks failed in extract after detect, align and parse."""
    from leam.core.device import pick_device
    from leam.models.loader import preflight

    spec = copy.deepcopy(dlib_spec)
    assert preflight("dlib_resnet", spec, device="cpu") == (
        "dlib_resnet: leam.models.dlib_resnet:build on cpu, 9 layers, embedding dimension 128"
    )
    spec["layers"]["deep"] = "layer2.0.conv9"
    with pytest.raises(ValueError) as e:
        preflight("dlib_resnet", spec, device="cpu")
    msg = str(e.value)
    assert msg.startswith(
        "models.dlib_resnet.layers.deep: layer 'layer2.0.conv9' is not a module of DlibResNet; "
        "modules under 'layer2.0': layer2.0.conv1"
    )
    assert "layer2.0.conv2" in msg and "layer1" not in msg
    with pytest.raises(RuntimeError, match=r"^device is 'cuda:99' but this machine has \d+ CUDA GPU\(s\)"):
        pick_device("cuda:99")
    with pytest.raises(RuntimeError, match=r"^--device is 'cuda:99' .*: set --device auto"):
        pick_device("cuda:99", key="--device")
