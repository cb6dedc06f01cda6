"""TFLite models as ``torch.nn.Module``: read a ``.tflite`` flatbuffer, run its graph in torch.

A ``.tflite`` file is a FlatBuffers table (TFLite's ``schema.fbs``, file identifier ``TFL3``):
``Model.subgraphs[0]`` holds the tensors (shape, type, buffer, name), the operators in execution
order (opcode, input and output tensor indices, builtin options) and the graph's inputs and
outputs; ``Model.buffers`` hold the constants' bytes. :func:`read_tflite` reads the fields this
converter needs with a small FlatBuffers reader written here (no TensorFlow, no generated
bindings; tests/test_tflite.py checks it against LiteRT's generated schema and interpreter).
:func:`build` turns a float model into a :class:`TFLiteGraph`:

* every convolution (``CONV_2D``, ``DEPTHWISE_CONV_2D``) becomes a named submodule
  (:class:`TFLiteConv2d`, leam.models.tfjs's ``TFConv2d``) whose output is the (B, C, H, W) convolution plus its bias
  (batch norm is folded into it by the TFLite converter), before any activation: the tensor LEAM
  explains when ``layers:`` names it. Names come from the convolution's output tensor
  (``MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_0/SeparableConv2d/BatchNorm/FusedBatchNorm``
  -> ``Conv2d_2_InvResBlock_0_SeparableConv2d``); list them with :func:`conv_layers` (execution order);
* every other op runs in NHWC exactly as TFLite defines it (:data:`SUPPORTED`); float constants
  are buffers, so ``.to(device, dtype)`` moves them. An op outside :data:`SUPPORTED` raises
  :class:`TFLiteError` naming it.

The module maps (B, 3, H, W) float input, already scaled as the graph expects (the config's
``preprocess`` mean/std), to the (B, D) output tensor, for any batch size B: the file's fixed
batch (e.g. 2) is replaced by the input's in ``RESHAPE`` targets, and every supported op treats
batch elements independently.

Only bytes are read; nothing is unpickled or executed.
"""

from __future__ import annotations

import re
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.models.tfjs import TFConv2d, _same_pad

__all__ = [
    "TFLiteError",
    "TFLiteTensor",
    "TFLiteOperator",
    "TFLiteModel",
    "TFLiteGraph",
    "TFLiteConv2d",
    "read_tflite",
    "build",
    "conv_layers",
    "SUPPORTED",
    "BUILTIN_OPS",
]


class TFLiteError(ValueError):
    """A ``.tflite`` file that cannot be read or holds an op this converter does not know."""


_BUILTIN_OPS_TEXT = """
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP
FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC
LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX
SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX
DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER
GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL
NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR
ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL
FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE
CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE
MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND
SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE
BROADCAST_TO RFFT2D
"""
#: TFLite's BuiltinOperator enum, codes 0 to 131 (schema.fbs), for readable op names
BUILTIN_OPS: list[str] = _BUILTIN_OPS_TEXT.split()

#: TensorType code -> (name, little-endian numpy dtype or None where numpy has none)
TENSOR_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("FLOAT32", "<f4"),
    1: ("FLOAT16", "<f2"),
    2: ("INT32", "<i4"),
    3: ("UINT8", "u1"),
    4: ("INT64", "<i8"),
    5: ("STRING", None),
    6: ("BOOL", "?"),
    7: ("INT16", "<i2"),
    8: ("COMPLEX64", "<c8"),
    9: ("INT8", "i1"),
    10: ("FLOAT64", "<f8"),
}

_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}

# --------------------------------------------------------------------------- the flatbuffer reader


class _Table:
    """One FlatBuffers table of ``buf`` at ``pos``: field ``i`` lives at vtable slot ``4 + 2 i``."""

    __slots__ = ("buf", "pos", "_vt", "_vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self._vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vt_len = struct.unpack_from("<H", buf, self._vt)[0]

    def _field(self, i: int) -> int:
        """Absolute position of field ``i``, 0 when absent (default value)."""
        slot = 4 + 2 * i
        if slot >= self._vt_len:
            return 0
        off = struct.unpack_from("<H", self.buf, self._vt + slot)[0]
        return self.pos + off if off else 0

    def _deref(self, p: int) -> int:
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        p = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p else default

    def table(self, i: int) -> _Table | None:
        p = self._field(i)
        return _Table(self.buf, self._deref(p)) if p else None

    def _vector(self, i: int) -> tuple[int, int] | None:
        """(start of the elements, length) of vector field ``i``."""
        p = self._field(i)
        if not p:
            return None
        v = self._deref(p)
        return v + 4, struct.unpack_from("<I", self.buf, v)[0]

    def tables(self, i: int) -> list[_Table]:
        v = self._vector(i)
        if v is None:
            return []
        start, n = v
        return [_Table(self.buf, self._deref(start + 4 * k)) for k in range(n)]

    def array(self, i: int, dtype: str) -> np.ndarray:
        """A vector of scalars as a (copied) numpy array; empty when absent."""
        v = self._vector(i)
        dt = np.dtype(dtype)
        if v is None:
            return np.zeros(0, dt)
        start, n = v
        if start + n * dt.itemsize > len(self.buf):
            raise struct.error("vector runs past the end of the file")
        return np.frombuffer(self.buf, dt, n, start).copy()

    def string(self, i: int) -> str:
        return self.array(i, "u1").tobytes().decode("utf-8", "replace")


@dataclass
class TFLiteTensor:
    """One tensor of the graph; ``data``: the constant's values (``None`` for activations)."""

    index: int
    name: str
    shape: tuple[int, ...]
    type: str
    buffer: int
    data: np.ndarray | None = None
    scale: np.ndarray | None = None  # quantisation, where the tensor has any
    zero_point: np.ndarray | None = None


@dataclass
class TFLiteOperator:
    """One operator: its op name (``CONV_2D``, ``CUSTOM:Name``...), tensor indices (-1: absent
    optional input) and decoded builtin options (only for the ops :data:`SUPPORTED` reads)."""

    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteModel:
    """The first subgraph of a ``.tflite`` file."""

    version: int
    description: str
    tensors: list[TFLiteTensor]
    operators: list[TFLiteOperator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    n_subgraphs: int = 1


def _options(op: str, t: _Table | None) -> dict[str, Any]:
    """Builtin options of the ops :data:`SUPPORTED` uses (schema.fbs field order)."""
    if op == "CONV_2D":  # padding, stride_w, stride_h, fused_activation_function, dilation_w, dilation_h
        if t is None:
            return {"padding": "SAME", "stride": (0, 0), "dilation": (1, 1), "activation": "NONE"}
        return {
            "padding": _PADDING.get(t.scalar(0, "b"), "?"),
            "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
            "dilation": (t.scalar(5, "i", 1), t.scalar(4, "i", 1)),
            "activation": _ACTIVATIONS.get(t.scalar(3, "b"), "?"),
        }
    if op == "DEPTHWISE_CONV_2D":  # padding, stride_w, stride_h, depth_multiplier, activation, dilation_w, _h
        if t is None:
            return {"padding": "SAME", "stride": (0, 0), "dilation": (1, 1), "activation": "NONE", "multiplier": 0}
        return {
            "padding": _PADDING.get(t.scalar(0, "b"), "?"),
            "stride": (t.scalar(2, "i"), t.scalar(1, "i")),
            "multiplier": t.scalar(3, "i"),
            "dilation": (t.scalar(6, "i", 1), t.scalar(5, "i", 1)),
            "activation": _ACTIVATIONS.get(t.scalar(4, "b"), "?"),
        }
    if op in ("ADD", "SUB", "MUL"):  # fused_activation_function first
        return {"activation": _ACTIVATIONS.get(t.scalar(0, "b"), "?") if t else "NONE"}
    if op == "RESHAPE":  # new_shape (may be absent: the shape comes as the second input)
        return {"new_shape": tuple(int(v) for v in t.array(0, "<i4"))} if t else {}
    return {}


def read_tflite(path_or_bytes: str | Path | bytes) -> TFLiteModel:
    """A ``.tflite`` file (path or its bytes) -> :class:`TFLiteModel` of its first subgraph.

    Constant tensors carry their values (``data``, little-endian numpy arrays in the tensor's
    shape, for the types numpy has). Raises :class:`TFLiteError` on a file that is not TFLite or
    is truncated.
    """
    if isinstance(path_or_bytes, bytes):
        buf, source = path_or_bytes, "<bytes>"
    else:
        source = str(path_or_bytes)
        try:
            buf = Path(path_or_bytes).read_bytes()
        except OSError as e:
            raise TFLiteError(f"{source}: cannot read ({e})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteError(f"{source}: not a TFLite flatbuffer (no TFL3 file identifier)")
    try:
        return _read(buf)
    except (struct.error, ValueError, IndexError) as e:
        raise TFLiteError(f"{source}: damaged or truncated TFLite file ({e})") from None


def _read(buf: bytes) -> TFLiteModel:
    # Model: version, operator_codes, subgraphs, description, buffers
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    opcodes = []
    for oc in model.tables(1):  # deprecated_builtin_code (int8), custom_code, version, builtin_code
        code = max(oc.scalar(0, "b"), oc.scalar(3, "i"))
        name = BUILTIN_OPS[code] if 0 <= code < len(BUILTIN_OPS) else f"BUILTIN_{code}"
        opcodes.append(f"CUSTOM:{oc.string(1)}" if name == "CUSTOM" else name)
    buffers = []
    for b in model.tables(4):  # data, offset, size (offset/size: data after the flatbuffer)
        data = b.array(0, "u1")
        offset, size = b.scalar(1, "Q"), b.scalar(2, "Q")
        if not data.size and offset > 1 and size:
            if offset + size > len(buf):
                raise ValueError(f"buffer at {offset} + {size} runs past the end of the file")
            data = np.frombuffer(buf, np.uint8, size, offset).copy()
        buffers.append(data)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ValueError("no subgraph")
    g = subgraphs[0]  # tensors, inputs, outputs, operators, name
    tensors = []
    for k, t in enumerate(g.tables(0)):  # shape, type, buffer, name, quantization
        shape = tuple(int(v) for v in t.array(0, "<i4"))
        code = t.scalar(1, "b")
        tname, dtype = TENSOR_TYPES.get(code, (f"TYPE_{code}", None))
        bi = t.scalar(2, "I")
        tensor = TFLiteTensor(k, t.string(3), shape, tname, bi)
        raw = buffers[bi] if 0 < bi < len(buffers) else np.zeros(0, np.uint8)
        if raw.size and dtype is not None:
            dt = np.dtype(dtype)
            n = int(np.prod(shape)) if shape else 1
            if raw.size != n * dt.itemsize:
                raise ValueError(f"tensor {tensor.name!r}: buffer of {raw.size} bytes for shape {shape} {tname}")
            tensor.data = np.frombuffer(raw.tobytes(), dt).astype(dt.newbyteorder("=")).reshape(shape)
        q = t.table(4)  # min, max, scale, zero_point
        if q is not None:
            scale = q.array(2, "<f4")
            if scale.size:
                tensor.scale, tensor.zero_point = scale, q.array(3, "<i8")
        tensors.append(tensor)
    operators = []
    for k, o in enumerate(g.tables(3)):  # opcode_index, inputs, outputs, builtin_options_type, builtin_options
        op = opcodes[o.scalar(0, "I")]
        operators.append(
            TFLiteOperator(
                k,
                op,
                tuple(int(v) for v in o.array(1, "<i4")),
                tuple(int(v) for v in o.array(2, "<i4")),
                _options(op, o.table(4)),
            )
        )
    return TFLiteModel(
        version=model.scalar(0, "I"),
        description=model.string(3),
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(v) for v in g.array(1, "<i4")),
        outputs=tuple(int(v) for v in g.array(2, "<i4")),
        n_subgraphs=len(subgraphs),
    )


# --------------------------------------------------------------------------- the torch module

_Fn = Callable[..., torch.Tensor]
_ELEMENTWISE: dict[str, _Fn] = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul}
_UNARY: dict[str, _Fn] = {"RELU": F.relu, "ABS": torch.abs}
_CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}
#: the ops :class:`TFLiteGraph` runs: exactly those of MobileFaceNet_TF's TOCO file
SUPPORTED = sorted({*_CONV_OPS, *_ELEMENTWISE, *_UNARY, "RESHAPE"})
#: trailing parts of a convolution's output tensor name that name ops, not layers
_OP_PARTS = {
    "BatchNorm",
    "FusedBatchNorm",
    "FusedBatchNormV3",
    "batchnorm",
    "BiasAdd",
    "Conv2D",
    "depthwise",
    "convolution",
    "Relu",
    "Relu6",
    "read",
    "weights",
    "depthwise_weights",
    "kernel",
    "depthwise_kernel",
}


class TFLiteConv2d(TFConv2d):
    """:class:`TFConv2d` (NHWC in, (B, C, H, W) conv + bias out) whose depthwise convolutions run as
    a sum over the kernel taps on the CPU wherever oneDNN does not run them: in float64, and with
    oneDNN off (LEAM's graph forward, :mod:`leam.cam.leam`), where torch's grouped convolution loops
    over the channels one by one (about 10x slower for MobileFaceNet; same numbers up to rounding;
    elementwise, so the same bytes on any CPU)."""

    def forward(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        native = x_nhwc.dtype == torch.float64 or not torch.backends.mkldnn.enabled
        if self.groups == 1 or not native or x_nhwc.device.type != "cpu":
            return super().forward(x_nhwc)
        x = x_nhwc.permute(0, 3, 1, 2)
        kh, kw = self.weight.shape[-2:]
        (sh, sw), (dh, dw) = self.stride, self.dilation
        if self.padding == "SAME":
            t, b = _same_pad(x.shape[2], kh, sh, dh)
            left, r = _same_pad(x.shape[3], kw, sw, dw)
            x = F.pad(x, (left, r, t, b))
        if self.weight.shape[0] != x.shape[1]:  # depth multiplier M: output channel c M + m reads input c
            x = x.repeat_interleave(self.weight.shape[0] // x.shape[1], dim=1)
        ho, wo = (x.shape[2] - (kh - 1) * dh - 1) // sh + 1, (x.shape[3] - (kw - 1) * dw - 1) // sw + 1
        y = self.bias[None, :, None, None] if self.bias is not None else torch.zeros((), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                tap = x[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
                y = y + tap * self.weight[:, 0, i, j][None, :, None, None]
        return y


#: fused activations (ActivationFunctionType) this converter applies
_FUSED: dict[str, _Fn] = {
    "NONE": lambda x: x,
    "RELU": F.relu,
    "RELU6": lambda x: x.clamp(0, 6),
}


def _activation(name: str, where: str) -> str:
    if name not in _FUSED:
        raise TFLiteError(f"{where}: fused activation {name} is not supported")
    return name


def _sanitise(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return s if s and not s[0].isdigit() else f"n_{s}"


def _conv_names(model: TFLiteModel, convs: list[TFLiteOperator]) -> dict[int, str]:
    """{operator index: module name}: the scope of the convolution's output tensor (else of its
    weights), op parts and leading scopes shared by every convolution dropped, unique."""
    scopes: dict[int, list[str]] = {}
    for op in convs:
        for t in (op.outputs[0], op.inputs[1]):
            parts = [p for p in model.tensors[t].name.split(";")[0].split("/") if p]
            while parts and parts[-1] in _OP_PARTS:
                parts.pop()
            if parts:
                break
        scopes[op.index] = parts or [f"conv_{op.index}"]
    common = 0
    lists = list(scopes.values())
    while lists and all(len(p) > common + 1 for p in lists) and len({p[common] for p in lists}) == 1:
        common += 1
    shared = set(lists[0][:common]) if lists else set()
    out: dict[int, str] = {}
    seen: dict[str, int] = defaultdict(int)
    for index, parts in scopes.items():
        rest = parts[common:]
        while len(rest) > 1 and rest[0] in shared:  # TF's doubled name scopes: Net/Net/block
            rest = rest[1:]
        base = _sanitise("_".join(rest))
        seen[base] += 1
        out[index] = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return out


class TFLiteGraph(nn.Module):
    """A float TFLite graph run by torch: (B, 3, H, W) -> (B, D) (see the module docstring).

    Attributes: one :class:`TFLiteConv2d` per convolution (named by :func:`conv_layers`), ``consts``
    (float constants of the other ops, as buffers), ``input_name`` and ``output_name``.
    """

    def __init__(
        self, model: TFLiteModel, output: str | None = None, *, source: str = "model.tflite", fuse_prelu: bool = True
    ):
        super().__init__()
        unsupported = sorted({op.op for op in model.operators} - set(SUPPORTED))
        if unsupported:
            first = {u: next(op for op in model.operators if op.op == u) for u in unsupported}
            raise TFLiteError(
                f"{source}: op(s) "
                + ", ".join(
                    f"{u!r} (operator {o.index}, output {model.tensors[o.outputs[0]].name})" for u, o in first.items()
                )
                + f" not supported; supported: {', '.join(SUPPORTED)}"
            )
        if len(model.inputs) != 1:
            raise TFLiteError(f"{source}: expected one input tensor, found {len(model.inputs)}")
        inp = model.tensors[model.inputs[0]]
        if inp.type != "FLOAT32" or len(inp.shape) != 4:
            raise TFLiteError(f"{source}: input {inp.name} is {inp.type} {list(inp.shape)}, not float32 NHWC")
        self.input_name, self._input = inp.name, inp.index
        self._batch = inp.shape[0]  # the file's fixed batch, replaced by the input's in RESHAPE
        by_name = {t.name: t.index for t in model.tensors}
        if output is not None and output not in by_name:
            raise TFLiteError(f"{source}: no tensor named {output!r}")
        out = by_name[output] if output is not None else model.outputs[0]
        self.output_name, self._output = model.tensors[out].name, out
        producer = next((op.index for op in model.operators if out in op.outputs), None)
        if producer is None:
            raise TFLiteError(f"{source}: no operator computes the output {self.output_name}")
        ops = model.operators[: producer + 1]  # operators are stored in execution order
        convs = [op for op in ops if op.op in _CONV_OPS]
        names = _conv_names(model, convs)
        self.consts = nn.Module()
        self._const: dict[int, str] = {}
        self._int_const: dict[int, np.ndarray] = {}
        self._conv_modules: dict[int, str] = {}
        self._steps: list[tuple[TFLiteOperator, Any]] = []
        for op in ops:
            where = f"{source}: operator {op.index} ({op.op}, output {model.tensors[op.outputs[0]].name})"
            if op.op in _CONV_OPS:
                self._add_conv(model, op, names[op.index], where)
                self._steps.append((op, _activation(op.options["activation"], where)))
                continue
            for t in op.inputs:
                tensor = model.tensors[t] if t >= 0 else None
                if tensor is None or tensor.data is None or t in self._const or t in self._int_const:
                    continue
                if tensor.type == "FLOAT32":
                    key = f"t{t}"
                    self.consts.register_buffer(key, torch.from_numpy(tensor.data.copy()))
                    self._const[t] = key
                elif tensor.type in ("INT32", "INT64"):
                    self._int_const[t] = tensor.data
                else:
                    raise TFLiteError(f"{where}: constant {tensor.name} is {tensor.type} (only float32 models)")
            if op.op in _ELEMENTWISE:
                self._steps.append((op, _activation(op.options["activation"], where)))
            elif op.op == "RESHAPE":
                self._steps.append((op, self._reshape_target(model, op, where)))
            else:
                self._steps.append((op, None))
        if fuse_prelu:
            self._steps = self._fuse_prelu(self._steps, out)

    def _fuse_prelu(self, steps: list, out: int) -> list:
        """Replace TOCO's PReLU split, ``RELU(x) + c * (x - ABS(x))`` (5 elementwise passes over the
        activation), by one ``PRELU`` step with slope 2c (one pass, torch's ``prelu`` on the NCHW
        tensor). Bit-identical: x - |x| is exactly 2x for x < 0 and 0 otherwise, and 2c is exact.
        Only where the intermediate tensors feed nothing else."""
        uses: dict[int, int] = defaultdict(int)
        for op, _ in steps:
            for t in op.inputs:
                uses[t] += 1
        uses[out] += 1
        made = {op.outputs[0]: (op, extra) for op, extra in steps}
        drop: set[int] = set()
        fused: dict[int, tuple] = {}
        for op, extra in steps:
            if op.op != "ADD" or extra != "NONE" or len(op.inputs) != 2:
                continue
            parts = [made.get(t) for t in op.inputs]
            relu = next((p for p in parts if p and p[0].op == "RELU"), None)
            mul = next((p for p in parts if p and p[0].op == "MUL" and p[1] == "NONE"), None)
            if relu is None or mul is None:
                continue
            x = relu[0].inputs[0]
            c = next((t for t in mul[0].inputs if t in self._const), None)
            sub = next((made.get(t) for t in mul[0].inputs if t not in self._const), None)
            if c is None or sub is None or sub[0].op != "SUB" or sub[1] != "NONE" or sub[0].inputs[0] != x:
                continue
            ab = made.get(sub[0].inputs[1])
            if ab is None or ab[0].op != "ABS" or ab[0].inputs[0] != x:
                continue
            inner = [relu[0], mul[0], sub[0], ab[0]]
            if any(uses[o.outputs[0]] != 1 for o in inner):
                continue
            slope = getattr(self.consts, self._const[c]).reshape(-1) * 2
            key = f"prelu{op.index}"
            self.consts.register_buffer(key, slope)
            fused[op.index] = (x, key)
            drop |= {o.index for o in inner}
        return [
            (TFLiteOperator(op.index, "PRELU", (fused[op.index][0],), op.outputs), fused[op.index][1])
            if op.index in fused
            else (op, extra)
            for op, extra in steps
            if op.index not in drop
        ]

    def _add_conv(self, model: TFLiteModel, op: TFLiteOperator, name: str, where: str) -> None:
        x, w = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
        b = model.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        for t in (w, b):
            if t is not None and (t.data is None or t.type != "FLOAT32"):
                raise TFLiteError(f"{where}: {t.name} is not a float32 constant (only float32 models)")
        assert w.data is not None
        o = op.options
        if o["padding"] not in ("SAME", "VALID") or min(o["stride"]) < 1 or min(o["dilation"]) < 1:
            raise TFLiteError(f"{where}: unsupported options {o}")
        if op.op == "CONV_2D":  # filter (O, kh, kw, I) -> (O, I, kh, kw)
            weight = w.data.transpose(0, 3, 1, 2)
            groups = 1
            if len(x.shape) == 4 and x.shape[3] != w.data.shape[3]:
                raise TFLiteError(f"{where}: grouped convolution ({x.shape[3]} channels, filter {w.data.shape})")
        else:  # filter (1, kh, kw, C M) -> (C M, 1, kh, kw), groups C; output channel c M + m, as in torch
            groups = x.shape[3]
            weight = w.data.transpose(3, 0, 1, 2)
            if w.data.shape[3] % groups or (o["multiplier"] and w.data.shape[3] != groups * o["multiplier"]):
                raise TFLiteError(f"{where}: filter {w.data.shape} for {groups} input channels")
        bias = torch.from_numpy(b.data.copy()) if b is not None and b.data is not None else None
        conv = TFLiteConv2d(
            torch.from_numpy(np.ascontiguousarray(weight)), bias, o["stride"], o["dilation"], o["padding"], groups
        )
        self.add_module(name, conv)
        self._conv_modules[op.index] = name

    def _reshape_target(self, model: TFLiteModel, op: TFLiteOperator, where: str) -> list[int]:
        """RESHAPE's target shape, its leading dimension the batch where the file's batch is."""
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and model.tensors[op.inputs[1]].data is not None:
            target = [int(v) for v in np.asarray(model.tensors[op.inputs[1]].data).reshape(-1)]
        elif "new_shape" in op.options:
            target = list(op.options["new_shape"])
        else:
            raise TFLiteError(f"{where}: the target shape is not a constant")
        src = model.tensors[op.inputs[0]].shape
        if not (target and src and target[0] == src[0] == self._batch):
            raise TFLiteError(f"{where}: reshape {list(src)} -> {target} mixes the batch with other axes")
        return target

    def _value(self, env: dict[int, Any], t: int) -> Any:
        if t in self._const:
            return getattr(self.consts, self._const[t])
        if t in self._int_const:
            return self._int_const[t]
        return env[t]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) scaled input -> the output tensor, (B, D) for an embedding."""
        env: dict[int, Any] = {self._input: x.permute(0, 2, 3, 1)}  # NHWC, as the graph expects
        for op, extra in self._steps:
            if op.op in _CONV_OPS:  # the module holds the weights and returns NCHW (the tensor hooks see)
                conv = getattr(self, self._conv_modules[op.index])
                env[op.outputs[0]] = _FUSED[extra](conv(env[op.inputs[0]]).permute(0, 2, 3, 1))
                continue
            if op.op == "PRELU":  # fused RELU(x) + c (x - ABS(x)): prelu on the NCHW view
                x = env[op.inputs[0]].permute(0, 3, 1, 2)
                env[op.outputs[0]] = F.prelu(x, getattr(self.consts, extra)).permute(0, 2, 3, 1)
                continue
            args = [self._value(env, t) for t in op.inputs if t >= 0]
            if op.op in _ELEMENTWISE:
                y = _FUSED[extra](_ELEMENTWISE[op.op](args[0], args[1]))
            elif op.op in _UNARY:
                y = _UNARY[op.op](args[0])
            else:  # RESHAPE
                y = args[0].reshape(args[0].shape[0], *extra[1:])
            env[op.outputs[0]] = y
        return env[self._output]

    def conv_layers(self) -> list[str]:
        """Module names of the graph's convolutions in execution order (for ``layers:``)."""
        return [self._conv_modules[op.index] for op, _ in self._steps if op.index in self._conv_modules]


def conv_layers(module: TFLiteGraph) -> list[str]:
    """Module names of the graph's convolutions in execution order (for ``layers:``)."""
    return module.conv_layers()


def build(path: str | Path, output: str | None = None) -> TFLiteGraph:
    """Builder for config entries: ``.tflite`` path -> :class:`TFLiteGraph`.

    ``output``: the tensor whose value is the embedding (default: the graph's first output). The
    graph's input is the model's input as is: any scaling (MobileFaceNet_TF's ``(x - 127.5) / 128``)
    is the config's ``preprocess`` mean/std.
    """
    return TFLiteGraph(read_tflite(path), output, source=str(path))
