"""Model registry: build a face-recognition model from its config entry, never downloading.

A config entry (``models.<name>`` in config.yaml) names an importable ``builder`` (``module:function``
taking the weight file's path and returning a ``torch.nn.Module`` that maps normalised
(B, 3, H, W) float input to (B, D) embeddings), the weight file, its sha256 and public URL, the
input size, per-channel mean/std on the 0-255 pixel scale, and the layers to explain
(``{paper name: module path}``).

Missing or mismatched weights raise :class:`WeightsError` with one message that names the file,
the expected sha256, where to get it, and the config key to set.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import sha256_file
from ..resources import MissingResource, resolve_path

__all__ = ["FaceModel", "WeightsError", "load_model", "resolve_module", "import_builder"]


class WeightsError(FileNotFoundError):
    """A model's weight file is missing or is not the expected file."""


@dataclass
class FaceModel:
    """A loaded model plus what is needed to feed it and to explain it.

    ``module``: (B, 3, H, W) normalised float -> (B, D) embeddings, eval mode, no parameter grads.
    ``mean``/``std``: per channel (R, G, B) on the 0-255 scale: ``x = (pixel - mean) / std``.
    ``layers``: {layer name used in tables: module path inside ``module``}.
    """

    name: str
    module: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: dict[str, str]

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 aligned frames -> (B, 3, H, W) normalised model input.

        Frames are resized to the model's input size with antialiased bilinear interpolation when
        the sizes differ, then normalised. dtype/device follow the module's parameters.
        """
        p = next(self.module.parameters())
        x = frames.to(device=p.device).permute(0, 3, 1, 2).to(p.dtype)  # (B, 3, S, S)
        if tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, dtype=p.dtype, device=p.device)[:, None, None]
        std = torch.tensor(self.std, dtype=p.dtype, device=p.device)[:, None, None]
        return (x - mean) / std


def import_builder(spec: str) -> Callable[..., nn.Module]:
    """``"package.module:function"`` -> the function; a clear error if it cannot be imported."""
    mod_name, _, fn_name = spec.partition(":")
    if not fn_name:
        raise ValueError(f"builder {spec!r} must look like 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"builder {spec!r}: cannot import module {mod_name!r} ({e})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"builder {spec!r}: module {mod_name!r} has no function {fn_name!r}")
    return fn


def resolve_module(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` with an error that lists nearby names."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_modules() if n]
        close = [n for n in names if n.split(".")[0] == path.split(".")[0]][:12] or names[:12]
        raise ValueError(f"layer {path!r} is not a module of {type(root).__name__}; "
                         f"some module paths: {', '.join(close)}") from None


def _weights_path(name: str, spec: dict, base_dir: str | os.PathLike) -> Path:
    w = spec.get("weights") or {}
    key = f"models.{name}.weights.path"
    where = f" Download it from {w['url']}" if w.get("url") else " It is not publicly downloadable"
    expect = f" (sha256 {w['sha256']})" if w.get("sha256") else ""
    try:
        path = resolve_path(w["path"], base_dir)
    except MissingResource as e:
        raise WeightsError(f"model '{name}': {e} Or point {key} in config.yaml at a copy of the file{expect}.") from None
    if not path.is_file():
        raise WeightsError(
            f"model '{name}': weight file not found: {path}.{where}{expect}, "
            f"then set {key} in config.yaml to its location."
        )
    if w.get("sha256"):
        got = sha256_file(path)
        if got != w["sha256"]:
            raise WeightsError(
                f"model '{name}': weight file {path} has sha256 {got}, expected {w['sha256']}.{where} "
                f"and set {key} in config.yaml, or correct models.{name}.weights.sha256 if you meant "
                f"to use this file."
            )
    return path


def load_model(name: str, spec: dict, *, base_dir: str | os.PathLike = ".",
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FaceModel:
    """Build model ``name`` from its (validated) config entry ``spec``.

    The module is put in eval mode, moved to ``device``/``dtype`` and its parameters are frozen
    (``requires_grad=False``: LEAM needs activation gradients only).
    """
    path = _weights_path(name, spec, base_dir)
    module = import_builder(spec["builder"])(path)
    if not isinstance(module, nn.Module):
        raise ValueError(f"model '{name}': builder {spec['builder']} returned {type(module).__name__}, not a torch.nn.Module")
    module = module.eval().to(device=device, dtype=dtype)
    for p in module.parameters():
        p.requires_grad_(False)
    layers = dict(spec["layers"])
    for path_ in layers.values():
        resolve_module(module, path_)
    pre = spec["preprocess"]
    return FaceModel(
        name=name,
        module=module,
        input_size=tuple(spec["input_size"]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        layers=layers,
    )
