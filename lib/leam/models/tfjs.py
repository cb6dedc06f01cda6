"""TF.js graph models as ``torch.nn.Module``: read ``model.json`` + ``*.bin``, run the graph in torch.

A TF.js graph model (``format: graph-model``) is a frozen TensorFlow graph: ``model.json`` holds
the nodes (``modelTopology.node``: name, op, inputs, attributes) and a ``weightsManifest`` naming
the binary shards and, in order, every constant stored in them (name, shape, dtype, optional
quantisation). :func:`build` turns one into a :class:`TFJSGraph`:

* every convolution (``Conv2D``, ``_FusedConv2D``, ``DepthwiseConv2dNative``,
  ``FusedDepthwiseConv2dNative``) becomes a named submodule :class:`TFConv2d` whose output is the
  (B, C, H, W) convolution plus its fused bias (batch norm is folded into it by the converter),
  before any fused activation: the tensor LEAM explains when ``layers:`` names it. Names come
  from the weight constants (``conv1``, ``stage1_unit1_conv0_0``, ``conv_dw_1``, ...); list them
  with :func:`conv_layers` (execution order);
* every other op runs in NHWC exactly as TensorFlow defines it (:data:`OPS`); constants are
  buffers, so ``.to(device, dtype)`` moves them.

The module maps (B, 3, H, W) float input, already scaled as the graph expects (the config's
``preprocess`` mean/std), to the (B, D) output node (``output=`` or the graph's first signature
output). Weights stored as float16 or as affine uint8/uint16 (``quantization``) are dequantised to
float32 when read. Unknown ops raise :class:`TFJSError` naming the op and the node.

Only files are read (JSON, raw little-endian arrays); nothing is unpickled or executed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TFJSError", "TFJSGraph", "TFConv2d", "read_graph_model", "build", "conv_layers", "OPS"]


class TFJSError(ValueError):
    """A TF.js model file that cannot be read or holds an op this converter does not know."""


_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "int8": np.int8,
    "int16": np.int16,
}


def read_graph_model(
    json_path: str | Path, shard_sha256: dict[str, str] | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """``model.json`` -> (its parsed JSON, {constant name: array}) with every weight shard read.

    ``shard_sha256``: {shard file name: expected sha256}; a shard that differs raises. Quantised
    weights are dequantised: ``float16`` -> float32; ``uint8``/``uint16`` with ``scale``/``min``
    -> ``q * scale + min`` (float32).
    """
    json_path = Path(json_path)
    try:
        spec = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise TFJSError(f"{json_path}: not a readable TF.js model.json ({e})") from None
    if spec.get("format") not in ("graph-model", None) or "modelTopology" not in spec:
        raise TFJSError(
            f"{json_path}: not a TF.js graph model (format {spec.get('format')!r}); "
            "layers models (tf.keras) are not supported"
        )
    weights: dict[str, np.ndarray] = {}
    for group in spec.get("weightsManifest", []):
        parts = []
        for rel in group["paths"]:
            p = json_path.parent / rel
            if not p.is_file():
                raise TFJSError(f"{json_path}: weight shard {p} is missing")
            data = p.read_bytes()
            want = (shard_sha256 or {}).get(rel)
            if want and (got := hashlib.sha256(data).hexdigest()) != want:
                raise TFJSError(f"{p}: sha256 {got}, expected {want} (a different or damaged weight shard)")
            parts.append(data)
        buf = b"".join(parts)
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            stored = q["dtype"] if q else w["dtype"]
            if stored not in _DTYPES:
                raise TFJSError(f"{json_path}: weight {w['name']} has unsupported dtype {stored!r}")
            dt = np.dtype(_DTYPES[stored]).newbyteorder("<")
            end = off + n * dt.itemsize
            if end > len(buf):
                raise TFJSError(
                    f"{json_path}: weight {w['name']} runs past the end of its shards "
                    f"({end} > {len(buf)} bytes): truncated download?"
                )
            a: np.ndarray = np.frombuffer(buf, dt, n, off).reshape(shape)
            off = end
            if q and stored in ("uint8", "uint16"):
                a = a.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            elif q or stored == "float16":
                a = a.astype(np.float32)
            weights[w["name"]] = np.array(a, dtype=np.dtype(a.dtype).newbyteorder("="))
        if off != len(buf):
            raise TFJSError(f"{json_path}: shards hold {len(buf)} bytes, the manifest describes {off}")
    return spec, weights


def _attr(node: dict, key: str, default: Any = None) -> Any:
    """A node attribute as a plain value (lists of ints, strings decoded, bools, floats)."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    return default


def _same_pad(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis: (before, after), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFConv2d(nn.Module):
    """A TensorFlow convolution (NHWC in) as torch: returns (B, C_out, H', W') conv + bias.

    ``weight``: OIHW (from TF's HWIO, or HW C M for depthwise, ``groups`` = C); ``padding``:
    ``SAME``, ``VALID`` or explicit (top, bottom, left, right). The output is NCHW (the tensor
    hooks see); :class:`TFJSGraph` turns it back to NHWC.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        padding: str | tuple[int, int, int, int],
        groups: int,
    ):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.dilation, self.padding, self.groups = stride, dilation, padding, groups

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (
            f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}"
        )

    def forward(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        x = x_nhwc.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last strides
        kh, kw = self.weight.shape[-2:]
        if self.padding == "SAME":
            t, b = _same_pad(x.shape[2], kh, self.stride[0], self.dilation[0])
            left, r = _same_pad(x.shape[3], kw, self.stride[1], self.dilation[1])
        elif self.padding == "VALID":
            t = b = left = r = 0
        elif isinstance(self.padding, tuple):
            t, b, left, r = self.padding
        else:
            raise TFJSError(f"unknown padding {self.padding!r}")
        if t == b and left == r:
            return F.conv2d(x, self.weight, self.bias, self.stride, (t, left), self.dilation, self.groups)
        return F.conv2d(F.pad(x, (left, r, t, b)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _activation(name: str, alpha: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "Relu":
        return F.relu
    if name == "Relu6":
        return lambda x: x.clamp(0, 6)
    if name == "Prelu":
        if alpha is None:
            raise TFJSError("a Prelu activation needs its alpha")
        slope = alpha
        return lambda x: torch.where(x >= 0, x, slope * x)
    if name == "Elu":
        return F.elu
    if name == "Sigmoid":
        return torch.sigmoid
    raise TFJSError(f"unsupported fused activation {name!r}")


def _axes(axes, ndim: int) -> list[int]:
    axes = [axes] if isinstance(axes, int) else list(axes)
    return [a % ndim for a in axes]


def _binary(fn):
    return lambda g, node, args: fn(args[0], args[1])


#: op name -> (graph, node, evaluated inputs) -> tensor; convolutions and MatMul are handled apart
OPS: dict[str, Callable[[Any, dict, list], Any]] = {
    "Identity": lambda g, n, a: a[0],
    "Add": _binary(torch.add),
    "AddV2": _binary(torch.add),
    "BiasAdd": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "RealDiv": _binary(torch.div),
    "Maximum": _binary(torch.maximum),
    "Minimum": _binary(torch.minimum),
    "Abs": lambda g, n, a: a[0].abs(),
    "Neg": lambda g, n, a: -a[0],
    "Relu": lambda g, n, a: F.relu(a[0]),
    "Relu6": lambda g, n, a: a[0].clamp(0, 6),
    "Sigmoid": lambda g, n, a: torch.sigmoid(a[0]),
    "Square": lambda g, n, a: a[0] * a[0],
    "Sqrt": lambda g, n, a: a[0].sqrt(),
    "Rsqrt": lambda g, n, a: a[0].rsqrt(),
    "Prelu": lambda g, n, a: torch.where(a[0] >= 0, a[0], a[1] * a[0]),
    "Softmax": lambda g, n, a: torch.softmax(a[0], dim=-1),
    "Reshape": lambda g, n, a: a[0].reshape([int(s) for s in np.asarray(a[1]).reshape(-1)]),
    "Squeeze": lambda g, n, a: (
        a[0].squeeze(_axes(_attr(n, "squeeze_dims", []), a[0].dim())) if _attr(n, "squeeze_dims") else a[0].squeeze()
    ),
    "Mean": lambda g, n, a: a[0].mean(
        _axes(np.asarray(a[1]).reshape(-1).tolist(), a[0].dim()), keepdim=bool(_attr(n, "keep_dims", False))
    ),
    "Sum": lambda g, n, a: a[0].sum(
        _axes(np.asarray(a[1]).reshape(-1).tolist(), a[0].dim()), keepdim=bool(_attr(n, "keep_dims", False))
    ),
    "Pad": lambda g, n, a: F.pad(a[0], [int(v) for pair in np.asarray(a[1])[::-1] for v in pair]),
    # made by _fuse from several TF ops
    "_Clip": lambda g, n, a: a[0].clamp(n["_lo"], n["_hi"]),
    "_Prelu": lambda g, n, a: (
        F.prelu(a[0].permute(0, 3, 1, 2), a[1].reshape(-1)).permute(0, 2, 3, 1)
        if a[0].dim() == 4
        else torch.where(a[0] >= 0, a[0], a[1] * a[0])
    ),
}

_CONV_OPS = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
_MATMUL_OPS = {"MatMul", "_FusedMatMul"}
#: last scope parts of a weight constant that say "this is a kernel", dropped from layer names
_KERNEL_PARTS = {
    "merged_input",
    "convolution",
    "Conv2D_weights",
    "depthwise_weights",
    "depthwise_kernel",
    "kernel",
    "weights",
    "filter",
    "depthwise",
}


def _sanitise(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return s if s and not s[0].isdigit() else f"n_{s}"


def _conv_names(nodes: list[dict]) -> dict[str, str]:
    """{conv node name: module name}: the scope of its weight constant, readable and unique."""
    scopes = {}
    for node in nodes:
        if node["op"] in _CONV_OPS:
            parts = node["input"][1].split("/")
            while len(parts) > 1 and parts[-1] in _KERNEL_PARTS:
                parts.pop()
            parts[-1] = re.sub(r"_(weight|kernel|weights)$", "", parts[-1])
            scopes[node["name"]] = parts
    # drop leading scope parts shared by every convolution (e.g. MobileFaceNet/)
    common = 0
    lists = list(scopes.values())
    while lists and all(len(p) > common + 1 for p in lists) and len({p[common] for p in lists}) == 1:
        common += 1
    out: dict[str, str] = {}
    seen: dict[str, int] = defaultdict(int)
    for node_name, parts in scopes.items():
        base = _sanitise("_".join(parts[common:]))
        seen[base] += 1
        out[node_name] = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return out


def _topological(nodes: list[dict], outputs: list[str]) -> list[dict]:
    """The nodes the outputs need, inputs first (``^control`` inputs ignored)."""
    by_name = {n["name"]: n for n in nodes}
    order: list[dict] = []
    state: dict[str, int] = {}
    for out in outputs:
        stack = [(out, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name):
                continue
            if name not in by_name:
                raise TFJSError(f"graph has no node {name!r}")
            state[name] = 1
            stack.append((name, True))
            for inp in by_name[name].get("input", []):
                src = _source(inp)
                if inp.startswith("^") or state.get(src):
                    continue
                stack.append((src, False))
    return order


def _source(inp: str) -> str:
    """Node name of an input reference ``name``, ``name:0`` or ``^name``."""
    return inp.lstrip("^").split(":")[0]


def _fuse(
    nodes: list[dict], weights: dict[str, np.ndarray], keep: set[str]
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fewer, cheaper ops computing the same function (up to float rounding); ``keep``: node names
    that must stay (the output). Returns new nodes (topological order kept) and constants.

    * a per-channel ``Mul`` or ``Add`` right after a convolution without a fused activation is folded
      into its weights and bias (the batch norms TF.js leaves unfused), so every convolution
      module computes conv + batch norm, as the converter's own ``_FusedConv2D`` nodes do;
    * ``Maximum(Minimum(Relu(x), c), 0)`` (Keras' ReLU6 and other clips) -> one clamp;
    * ``Maximum(0, x) + g * Minimum(0, x)`` (MXNet's PReLU) -> one PReLU.
    """
    nodes = [{**n, "input": list(n.get("input", []))} for n in nodes]
    weights = dict(weights)
    by = {n["name"]: n for n in nodes}
    removed: set[str] = set()
    new_consts: list[dict] = []

    def consumers(name: str) -> list[dict]:
        return [
            n
            for n in nodes
            if n["name"] not in removed and any(_source(i) == name for i in n["input"] if not i.startswith("^"))
        ]

    def sole(name: str, ops: tuple[str, ...]) -> dict | None:
        c = consumers(name)
        return c[0] if name not in keep and len(c) == 1 and c[0]["op"] in ops else None

    def const(inp: str) -> np.ndarray | None:
        n = by.get(_source(inp))
        v = weights.get(n["name"]) if n is not None and n["op"] == "Const" else None
        return v if v is not None and v.dtype.kind == "f" else None

    def scalar(inp: str) -> float | None:
        v = const(inp)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def replace(old: dict, new: str) -> None:
        removed.add(old["name"])
        for n in consumers(old["name"]):
            n["input"] = [new if _source(i) == old["name"] and not i.startswith("^") else i for i in n["input"]]

    for conv in [n for n in nodes if n["op"] in _CONV_OPS]:
        while True:
            fused = _attr(conv, "fused_ops", []) if conv["op"].startswith(("_Fused", "Fused")) else []
            nxt = sole(conv["name"], ("Mul", "Add", "AddV2", "BiasAdd"))
            if fused not in ([], ["BiasAdd"]) or nxt is None:
                break
            other = [i for i in nxt["input"] if _source(i) != conv["name"]]
            w = weights[_source(conv["input"][1])]
            c_out = w.shape[2] * w.shape[3] if "Depthwise" in conv["op"] else w.shape[3]
            v = const(other[0]) if len(other) == 1 else None
            if v is None or v.size not in (1, c_out) or v.ndim > 1 and any(d != 1 for d in v.shape[:-1]):
                break
            vec = np.broadcast_to(v.reshape(-1), (c_out,)).astype(np.float32)
            bias = weights[_source(conv["input"][2])] if fused else np.zeros(c_out, np.float32)
            if nxt["op"] == "Mul":
                w = (w.reshape(*w.shape[:2], c_out) * vec).reshape(w.shape)
                bias = bias * vec
            else:
                bias = bias + vec
            wname, bname = f"{conv['name']}/_folded_w{len(weights)}", f"{conv['name']}/_folded_b{len(weights)}"
            for name, value in ((wname, w), (bname, bias)):
                weights[name] = np.ascontiguousarray(value, np.float32)
                by[name] = {"name": name, "op": "Const", "input": []}
                new_consts.append(by[name])
            conv["input"] = [conv["input"][0], wname, bname]
            if not fused:
                conv["op"] = "FusedDepthwiseConv2dNative" if "Depthwise" in conv["op"] else "_FusedConv2D"
                conv["attr"] = {
                    **conv.get("attr", {}),
                    "fused_ops": {"list": {"s": [base64.b64encode(b"BiasAdd").decode()]}},
                }
            replace(nxt, conv["name"])
    for relu in [n for n in nodes if n["op"] == "Relu"]:
        lo = sole(relu["name"], ("Minimum",))
        hi = sole(lo["name"], ("Maximum",)) if lo else None
        if lo is None or hi is None:
            continue
        c_hi = scalar([i for i in lo["input"] if _source(i) != relu["name"]][0])
        c_lo = scalar([i for i in hi["input"] if _source(i) != lo["name"]][0])
        if c_hi is None or c_lo != 0.0 or c_hi < 0:
            continue
        removed.update({relu["name"], lo["name"]})
        hi.update(op="_Clip", input=[relu["input"][0]], _lo=0.0, _hi=c_hi)
    for add in [n for n in nodes if n["op"] in ("Add", "AddV2") and n["name"] not in removed]:
        ins = [by.get(_source(i)) for i in add["input"]]
        mx = next((n for n in ins if n and n["op"] == "Maximum"), None)
        mul = next((n for n in ins if n and n["op"] == "Mul"), None)
        if mx is None or mul is None:
            continue
        mn = next((by.get(_source(i)) for i in mul["input"] if by.get(_source(i), {}).get("op") == "Minimum"), None)
        g = next((i for i in mul["input"] if const(i) is not None), None)
        if mn is None or g is None:
            continue
        xs = [{_source(i) for i in n["input"] if scalar(i) != 0.0} for n in (mx, mn)]
        if not (
            len(xs[0]) == 1
            and xs[0] == xs[1]
            and all(scalar(i) == 0.0 for n in (mx, mn) for i in n["input"] if _source(i) not in xs[0])
        ):
            continue
        if any(len(consumers(n["name"])) != 1 or n["name"] in keep for n in (mx, mn, mul)):
            continue
        removed.update({mx["name"], mn["name"], mul["name"]})
        add.update(op="_Prelu", input=[next(iter(xs[0])), g])
    return new_consts + [n for n in nodes if n["name"] not in removed], weights


class TFJSGraph(nn.Module):
    """A TF.js graph model run by torch: (B, 3, H, W) -> (B, D) (see the module docstring).

    Attributes: one :class:`TFConv2d` per convolution (named by :func:`conv_layers`), ``consts``
    (float constants as buffers), ``input_name`` and ``output_name``.
    """

    def __init__(
        self, spec: dict, weights: dict[str, np.ndarray], output: str | None = None, *, source: str = "model.json"
    ):
        super().__init__()
        nodes = spec["modelTopology"]["node"]
        inputs = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        if len(inputs) != 1:
            raise TFJSError(f"{source}: expected one input (Placeholder), found {inputs}")
        self.input_name = inputs[0]
        sig_out = list(
            (spec.get("signature") or spec.get("userDefinedMetadata", {}).get("signature") or {})
            .get("outputs", {})
            .values()
        )
        self.output_name = _source(output or (sig_out[0]["name"] if sig_out else nodes[-1]["name"]))
        order = _topological(nodes, [self.output_name])
        names = _conv_names(order)  # from the original weight names
        self._nodes, weights = _fuse(order, weights, {self.output_name})
        self.consts = nn.Module()
        self._const_names: dict[str, str] = {}
        self._int_consts: dict[str, np.ndarray] = {}
        self._conv_modules: dict[str, str] = {}
        self._fused_acts: dict[str, list[str]] = {}
        for node in self._nodes:
            op = node["op"]
            if op == "Const":
                if node["name"] not in weights:
                    raise TFJSError(f"{source}: constant {node['name']} is not in the weights manifest")
                a = weights[node["name"]]
                if a.dtype.kind == "f":
                    key = f"c{len(self._const_names)}"
                    self.consts.register_buffer(key, torch.from_numpy(a.copy()))
                    self._const_names[node["name"]] = key
                else:
                    self._int_consts[node["name"]] = a
            elif op in _CONV_OPS:
                self._add_conv(node, names[node["name"]], weights, source)
            elif op not in OPS and op not in _MATMUL_OPS and op != "Placeholder":
                raise TFJSError(
                    f"{source}: op {op!r} (node {node['name']}) is not supported; supported: "
                    f"{', '.join(sorted({*OPS, *_CONV_OPS, *_MATMUL_OPS}))}"
                )

    def _add_conv(self, node: dict, name: str, weights: dict[str, np.ndarray], source: str) -> None:
        op = node["op"]
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise TFJSError(f"{source}: {node['name']}: data_format {_attr(node, 'data_format')} (only NHWC)")
        w = weights[_source(node["input"][1])]
        depthwise = "Depthwise" in op
        if depthwise:  # (kh, kw, C, M) -> (C M, 1, kh, kw), groups C
            kh, kw, c, m = w.shape
            wt = torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)))
            groups = c
        else:  # (kh, kw, C_in, C_out) -> (C_out, C_in, kh, kw)
            wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            groups = 1
        fused = _attr(node, "fused_ops", []) if op.startswith(("_Fused", "Fused")) else []
        bias = None
        if fused and fused[0] == "BiasAdd":
            bias = torch.from_numpy(weights[_source(node["input"][2])].copy())
            fused = fused[1:]
        elif fused and fused[0] == "FusedBatchNorm":
            raise TFJSError(f"{source}: {node['name']}: fused batch norm is not supported")
        strides = _attr(node, "strides", [1, 1, 1, 1])
        dil = _attr(node, "dilations", [1, 1, 1, 1])
        padding = _attr(node, "padding", "VALID")
        if padding == "EXPLICIT":
            e = _attr(node, "explicit_paddings", [])
            padding = (e[2], e[3], e[4], e[5])
        conv = TFConv2d(wt, bias, (strides[1], strides[2]), (dil[1], dil[2]), padding, groups)
        self.add_module(name, conv)
        self._conv_modules[node["name"]] = name
        self._fused_acts[node["name"]] = fused  # activation(s) after the bias, e.g. ['Relu'] or ['Prelu']

    def _value(self, env: dict, inp: str):
        src = _source(inp)
        if src in self._const_names:
            return getattr(self.consts, self._const_names[src])
        if src in self._int_consts:
            return self._int_consts[src]
        return env[src]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) scaled input -> the output node's tensor, (B, D) for an embedding."""
        env: dict[str, Any] = {self.input_name: x.permute(0, 2, 3, 1)}  # NHWC, as the graph expects
        for node in self._nodes:
            op = node["op"]
            if op in ("Const", "Placeholder"):
                continue
            args = [self._value(env, i) for i in node.get("input", []) if not i.startswith("^")]
            if op in _CONV_OPS:
                y = getattr(self, self._conv_modules[node["name"]])(args[0]).permute(0, 2, 3, 1)  # NHWC
                acts = self._fused_acts[node["name"]]
                for act in acts:  # TF passes a fused Prelu's alpha after the bias
                    y = _activation(act, args[3] if act == "Prelu" else None)(y)
            elif op in _MATMUL_OPS:
                a, b = args[0], args[1]
                if _attr(node, "transpose_a", False):
                    a = a.transpose(-1, -2)
                if _attr(node, "transpose_b", False):
                    b = b.transpose(-1, -2)
                y = a @ b
                fused = _attr(node, "fused_ops", []) if op == "_FusedMatMul" else []
                k = 2
                for f in fused:
                    if f == "BiasAdd":
                        y = y + args[k]
                        k += 1
                    else:
                        y = _activation(f, args[k] if f == "Prelu" else None)(y)
            else:
                y = OPS[op](self, node, args)
            env[node["name"]] = y
        return env[self.output_name]

    def conv_layers(self) -> list[str]:
        """Module names of the graph's convolutions in execution order (for ``layers:``)."""
        return [self._conv_modules[n["name"]] for n in self._nodes if n["name"] in self._conv_modules]


def conv_layers(module: TFJSGraph) -> list[str]:
    """Module names of the graph's convolutions in execution order (for ``layers:``)."""
    return module.conv_layers()


def build(path: str | Path, output: str | None = None, shard_sha256: dict[str, str] | None = None) -> TFJSGraph:
    """Builder for config entries: ``model.json`` path (shards beside it) -> :class:`TFJSGraph`.

    ``output``: the output node whose value is the embedding (default: the graph's first signature
    output), e.g. ``global_pooling/Mean`` for HSE FaceRes's 1024-D descriptor. ``shard_sha256``:
    {shard file name: sha256} checked before reading (the config's ``weights.sha256`` checks the
    JSON itself).
    """
    spec, weights = read_graph_model(path, shard_sha256)
    return TFJSGraph(spec, weights, output, source=str(path))
