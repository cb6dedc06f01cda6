"""A reader for dlib's DNN serialisation (``.dat``), enough for the face-recognition ResNet.

No pickle and no dlib import: the file is parsed field by field (dlib/serialize.h,
dlib/float_details.h, dlib/dnn/core.h, dlib/dnn/layers.h) and every layer record is checked for
the version strings and shapes this reader understands; anything else raises
:class:`DlibFormatError` naming the byte offset.

Encoding:
  * integer: a control byte (low 4 bits: number of magnitude bytes, bit 7: negative), then the
    magnitude, little-endian;
  * string: integer length, raw bytes; bool: ASCII ``'1'``/``'0'``;
  * float/double: integer mantissa, integer exponent, value = m * 2**e;
  * tensor: integer version 2, four integer dims (n, k, nr, nc), then n*k*nr*nc float32 LE;
    alias tensor: integer version then dims only.
  * network: ``add_loss_layer`` version + loss details, then one integer version per wrapper from
    the outermost inward (2: ordinary layer, 1: tag or skip, 3: the layer on the input), the input
    layer, and each ordinary layer's details from input to output, each followed by three bools
    and three (empty) tensors; the layer on the input also stores its sample expansion factor.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DlibFormatError", "DlibLayer", "DlibNetFile", "read_dlib_net"]


class DlibFormatError(ValueError):
    pass


@dataclass
class DlibLayer:
    """One serialised layer: ``kind`` (e.g. ``con``), ``version`` string and its fields."""

    kind: str
    version: str
    fields: dict = field(default_factory=dict)


@dataclass
class DlibNetFile:
    loss: str
    loss_fields: dict
    input_layer: str
    input_means: tuple[float, float, float]
    input_size: tuple[int, int]
    wrapper_versions: list[int]
    layers: list[DlibLayer]


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.b = data
        self.pos = 0
        self.path = path

    def fail(self, msg: str):
        raise DlibFormatError(f"{self.path}: byte {self.pos}: {msg}")

    def int(self) -> int:
        if self.pos >= len(self.b):
            self.fail("unexpected end of file")
        c = self.b[self.pos]
        n = c & 0x0F
        if n > 8 or c & 0x70:
            self.fail(f"bad integer control byte 0x{c:02x}")
        v = int.from_bytes(self.b[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if c & 0x80 else v

    def str(self) -> str:
        n = self.int()
        if n < 0 or n > 256:
            self.fail(f"implausible string length {n}")
        s = self.b[self.pos : self.pos + n]
        self.pos += n
        return s.decode("ascii", errors="replace")

    def float(self) -> float:
        m, e = self.int(), self.int()
        if e in (32000, 32001, 32002):
            return {32000: np.inf, 32001: -np.inf, 32002: np.nan}[e]
        return float(m) * 2.0**e

    def bool(self) -> bool:
        c = self.b[self.pos : self.pos + 1]
        self.pos += 1
        if c not in (b"0", b"1"):
            self.fail(f"bad bool {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        v = self.int()
        if v != 2:
            self.fail(f"tensor version {v} (expected 2)")
        dims = [self.int() for _ in range(4)]
        n = int(np.prod(dims))
        if self.pos + 4 * n > len(self.b):
            self.fail(f"tensor of {dims} runs past the end of the file")
        a = np.frombuffer(self.b, "<f4", n, self.pos).reshape(dims).copy()
        self.pos += 4 * n
        return a

    def alias(self) -> tuple[builtins.int, ...]:
        self.int()
        return tuple(self.int() for _ in range(4))


def _read_layer(r: _Reader) -> DlibLayer:
    start = r.pos
    version = r.str()
    f: dict = {}
    if version in ("con_4", "con_5"):
        kind = "con"
        f["params"] = r.tensor()
        f["num_filters"], f["nr"], f["nc"] = r.int(), r.int(), r.int()
        f["stride"] = (r.int(), r.int())
        f["padding"] = (r.int(), r.int())
        f["filters_shape"], f["biases_shape"] = r.alias(), r.alias()
        f["multipliers"] = tuple(r.float() for _ in range(4))
        f["use_bias"] = r.bool() if version == "con_5" else True
    elif version == "affine_":
        kind = "affine"
        f["params"] = r.tensor()
        f["gamma_shape"], f["beta_shape"] = r.alias(), r.alias()
        f["mode"] = r.int()
    elif version in ("relu_", "add_prev_"):
        kind = version.rstrip("_")
    elif version in ("max_pool_2", "avg_pool_2"):
        kind = version[:-2]
        f["nr"], f["nc"] = r.int(), r.int()
        f["stride"] = (r.int(), r.int())
        f["padding"] = (r.int(), r.int())
    elif version == "fc_2":
        kind = "fc"
        f["num_outputs"], f["num_inputs"] = r.int(), r.int()
        f["params"] = r.tensor()
        f["weights_shape"], f["biases_shape"] = r.alias(), r.alias()
        f["bias_mode"] = r.int()
        f["multipliers"] = tuple(r.float() for _ in range(4))
    else:
        r.pos = start
        r.fail(f"unsupported layer version string {version!r}")
    return DlibLayer(kind, version, f)


def _wrapper_versions(r: _Reader) -> list[int]:
    """One integer per layer wrapper from the outermost inward (2: ordinary layer, 1: tag or skip,
    3: the layer on the input), read up to and including the 3."""
    versions = []
    while True:
        v = r.int()
        if v not in (1, 2, 3):
            r.fail(f"unexpected wrapper version {v}")
        versions.append(v)
        if v == 3:
            return versions


def read_dlib_net(path: str | Path) -> DlibNetFile:
    """Parse a dlib ``loss_metric`` network file (e.g. dlib_face_recognition_resnet_model_v1.dat)."""
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    if r.int() != 1:
        r.fail("expected add_loss_layer version 1")
    loss = r.str()
    if loss != "loss_metric_2":
        r.fail(f"unsupported loss {loss!r} (expected loss_metric_2)")
    loss_fields = {"margin": r.float(), "dist_thresh": r.float()}
    versions = _wrapper_versions(r)
    input_layer = r.str()
    if input_layer != "input_rgb_image_sized":
        r.fail(f"unsupported input layer {input_layer!r}")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    n_layers = sum(v in (2, 3) for v in versions)
    layers = []
    for i in range(n_layers):
        layers.append(_read_layer(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):
            r.tensor()
        if i == 0:
            r.int()  # sample expansion factor of the layer on the input
    if r.pos != len(r.b):
        r.fail(f"{len(r.b) - r.pos} trailing bytes after the last layer")
    return DlibNetFile(loss, loss_fields, input_layer, means, size, versions, layers)
