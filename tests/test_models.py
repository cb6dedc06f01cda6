"""Model registry: weights located and checked, never downloaded; clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from leam.models import WeightsError, load_model


def test_missing_weights_message_names_file_source_hash_and_key(dlib_spec, tmp_path):
    spec = copy.deepcopy(dlib_spec)
    spec["weights"]["path"] = str(tmp_path / "nowhere" / "model.dat")
    with pytest.raises(WeightsError) as e:
        load_model("dlib_resnet", spec)
    msg = str(e.value)
    assert msg == (
        f"model 'dlib_resnet': weight file not found: {tmp_path / 'nowhere' / 'model.dat'}. "
        f"Download it from {spec['weights']['url']} (sha256 {spec['weights']['sha256']}), "
        "then set models.dlib_resnet.weights.path in config.yaml to its location."
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
    with pytest.raises(ValueError, match=r"layer 'layer1.9.conv1' is not a module of DlibResNet; some module paths: layer1"):
        load_model("dlib_resnet", spec)
