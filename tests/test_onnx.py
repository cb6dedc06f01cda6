"""ONNX models (leam.models.onnx) against onnxruntime and against the PyTorch module they came from.

The zoo's IResNet-50 (arcface_torch layout, the architecture of insightface's buffalo_l
``w600k_r50.onnx``) with random weights and batch-norm statistics is exported with
``torch.onnx.export`` and loaded back through a config entry, as a user would load an insightface
ONNX file. Oracles: onnxruntime for the embeddings (bar 1e-4 relative to the embedding's scale),
the original torch module for LEAM maps (float64, bar 1e-5).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from leam.cam import LEAM
from leam.config import validate_config
from leam.core.frames import iter_identities
from leam.models.iresnet import PAPER_LAYERS, iresnet
from leam.models.loader import load_model
from leam.models.onnx import ONNXError, build, layer_names, readable_name


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """(torch IResNet-50 with random weights and BN statistics, path of its ONNX export)."""
    torch.manual_seed(0)
    model = iresnet("r50").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(0.5 if "prelu" not in name else 1.0).add_(0.02 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("onnx") / "w600k_r50_like.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            input_names=["input.1"],
            output_names=["embedding"],
            dynamic_axes={"input.1": {0: "batch"}},
            dynamo=False,
            opset_version=17,
        )
    return model, path


def _spec(path) -> dict:
    cfg = validate_config(
        {
            "models": {
                "r50_onnx": {
                    "builder": "leam.models.onnx:build",
                    "weights": {"path": str(path)},
                    "input_size": [112, 112],
                    "alignment": "arcface",
                    "preprocess": {"mean": [127.5] * 3, "std": [127.5] * 3},
                    "layers": dict(PAPER_LAYERS),
                }
            }
        }
    )
    return cfg["models"]["r50_onnx"]


@pytest.fixture(scope="module")
def frames(default_aligned):
    ids = {name: f for name, _, f in iter_identities(default_aligned)}
    return np.concatenate([ids["John_Salley"][:3], ids["obama"][:2]])


def test_layer_names_are_the_pytorch_module_paths(r50):
    torch_model, path = r50
    module = build(path)
    convs = [n for n, m in torch_model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert layer_names(module) == convs  # same names, same (execution) order
    assert readable_name("/layer1/layer1.0/downsample/downsample.0/Conv", "Conv", 3) == "layer1.0.downsample.0"
    assert readable_name("Conv_12", "Conv", 12) == "conv_12"  # names without a scope: op and index


def test_embeddings_equal_onnxruntime(r50, frames):
    import onnxruntime as ort

    _, path = r50
    model = load_model("r50_onnx", _spec(path))
    x = model.preprocess(torch.from_numpy(frames))
    with torch.no_grad():
        got = model.module(x).numpy()
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input.1": x.numpy()})[0]
    scale = np.abs(ref).max()
    diff = np.abs(got - ref).max()
    print(f"\nONNX IResNet-50: max |onnx2torch - onnxruntime| {diff:.3g}, largest |value| {scale:.3g}")
    assert 0.1 < scale < 1e4
    assert diff <= 1e-4 * max(1.0, scale)


def test_leam_maps_equal_the_original_torch_module(r50, frames):
    torch_model, path = r50
    spec = _spec(path)
    onnx_model = load_model("r50_onnx", spec, dtype=torch.float64)
    x = onnx_model.preprocess(torch.from_numpy(frames[:3]))
    with LEAM(onnx_model.module, onnx_model.layers) as leam:
        got = leam.explain(x)
    ref_module = torch_model.double()
    with LEAM(ref_module, dict(PAPER_LAYERS)) as leam:
        ref = leam.explain(x)
    worst = max((got.maps[k] - ref.maps[k]).abs().max().item() for k in PAPER_LAYERS)
    print(f"\nONNX IResNet-50: max |LEAM(onnx2torch) - LEAM(torch)| over 6 pairs x 9 layers: {worst:.3g}")
    assert all(ref.maps[k].max() > 0 for k in PAPER_LAYERS)
    assert worst <= 1e-5


def test_a_file_that_is_not_onnx_says_so(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not a protobuf at all")
    with pytest.raises(ONNXError, match="model.onnx: not a readable ONNX model"):
        build(bad)
