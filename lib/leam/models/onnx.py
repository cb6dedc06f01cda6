"""ONNX face models (e.g. insightface's model zoo: buffalo_l ``w600k_r50.onnx``, antelopev2
``glintr100.onnx``) as ``torch.nn.Module``, through ``onnx2torch``.

:func:`build` converts the file (``onnx.load`` parses protobuf; nothing is unpickled or run) and
renames the submodules so that ``layers:`` can name them the way a person reads the network:

* graphs exported from PyTorch carry scope names (``/layer1/layer1.0/conv1/Conv``): the module
  becomes ``layer1.0.conv1``, the original module's path;
* other node names (``Conv_0``, ``conv_12``...) become ``conv_<i>``, ``prelu_<i>``, ... (the op in
  lower case, then its index among the graph's nodes of that op, in execution order).

:func:`layer_names` lists the convolutions in execution order. The module maps (B, 3, H, W) input
(scaled as the model expects: insightface's are RGB ``(pixel - 127.5) / 127.5``; check your
model's card) to its first output, (B, D).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch.nn as nn

__all__ = ["build", "readable_name", "layer_names", "ONNXError"]


class ONNXError(ValueError):
    """An ONNX file that cannot be read or converted."""


def readable_name(node_name: str, op_type: str, index: int) -> str:
    """A module path for an ONNX node: the PyTorch scope when the name has one, else ``op_index``.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``; ``Conv_7`` (index 7) -> ``conv_7``.
    """
    parts = [p for p in node_name.split("/") if p]
    if node_name.startswith("/") and len(parts) >= 2:
        path: list[str] = []
        for comp in parts[:-1]:  # the last part is the op (Conv, Conv_1, ...)
            segs = comp.split(".")
            # a scope repeats the end of its parent's path ("layer1" then "layer1.0"): overlap once
            k = max((k for k in range(1, min(len(segs), len(path)) + 1) if path[-k:] == segs[:k]), default=0)
            path = path[: len(path) - k] + segs
        name = ".".join(path)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", name):
            return name
    return f"{op_type.lower()}_{index}"


def _onnx2torch_names(model) -> dict[str, tuple[str, str]]:
    """{module name onnx2torch gives a node: (the node's ONNX name, its op type)}.

    onnx2torch names a node ``domain/name`` with '.' made '/' (the op type when unnamed), plus
    ``_<k>`` for the k-th repeat (``onnx2torch.onnx_graph.OnnxGraph``); done the same way here.
    """
    out: dict[str, tuple[str, str]] = {}
    seen: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        base = (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")
        out[base + (f"_{seen[base]}" if seen[base] else "")] = (node.name, node.op_type)
        seen[base] += 1
    return out


def _rename(gm, originals: dict[str, tuple[str, str]]) -> None:
    """Give the call_module nodes of an onnx2torch GraphModule readable, unique module paths."""
    counts: dict[str, int] = defaultdict(int)
    taken: set[str] = set()
    renames: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        onnx_name, op = originals.get(node.target, (node.target, type(gm.get_submodule(node.target)).__name__))
        name = readable_name(onnx_name, op, counts[op])
        counts[op] += 1
        if name in taken or any(t.startswith(name + ".") or name.startswith(t + ".") for t in taken):
            name = f"{op.lower()}_{counts[op] - 1}"
        taken.add(name)
        renames[node.target] = name
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            delattr(gm, node.target)
            gm.add_submodule(renames[node.target], mod)
            node.target = renames[node.target]
    gm.delete_all_unused_submodules()
    gm.recompile()


def build(path: str | Path) -> nn.Module:
    """Builder for config entries: an ``.onnx`` file -> ``torch.nn.Module`` with readable layers."""
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:
        raise ONNXError(
            f"reading ONNX needs the packages onnx and onnx2torch ({e}); they are in envs/requirements.lock"
        ) from None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure: not an ONNX model
        raise ONNXError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    try:
        gm = convert(model)
    except NotImplementedError as e:
        raise ONNXError(f"{path}: onnx2torch cannot convert it: {e}") from None
    _rename(gm, _onnx2torch_names(model))
    return gm.eval()


def layer_names(module: nn.Module) -> list[str]:
    """Module paths of the convolutions of a :func:`build` module, in execution order."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    return [
        n.target for n in graph.nodes if n.op == "call_module" and isinstance(module.get_submodule(n.target), nn.Conv2d)
    ]
