"""Build a face-recognition model from its config entry, never downloading.

A config entry (``models.<name>`` in config/config.yaml) names an importable ``builder`` (``module:function``
taking the weight file's path and returning a ``torch.nn.Module`` that maps normalised
(B, 3, H, W) float input to (B, D) embeddings), the weight file, its sha256 and public URL, the
input size, per-channel mean/std on the 0-255 pixel scale, and the layers to explain
(``{paper name: module path}``).

Missing or mismatched weights raise :class:`WeightsError` with one message that names the file,
the expected sha256, where to get it, and the config key to set.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.core.device import pick_device
from leam.core.window import crop, input_window
from leam.models.checkpoint import load_state_dict_file
from leam.models.weights import WeightsError, check_weights, missing_file_message, weights_path

__all__ = [
    "conv_modules",
    "FaceModel",
    "WeightsError",
    "load_model",
    "preflight",
    "load_state_dict_file",
    "resolve_module",
    "import_builder",
    "check_weights",
    "missing_file_message",
    "weights_path",
]


@dataclass
class FaceModel:
    """A loaded model plus what is needed to feed it and to explain it.

    ``module``: (B, 3, H, W) normalised float -> (B, D) embeddings, eval mode, no parameter grads.
    ``mean``/``std``: per channel (R, G, B) on the 0-255 scale: ``x = (pixel - mean) / std``.
    ``layers``: {layer name used in tables: module path inside ``module``}.
    ``alignment``: the crop the model was trained on (:mod:`leam.core.window`: ``chip`` or ``arcface``);
    ``frame_padding``: the aligned frame's dlib chip padding (``align.padding``).
    """

    name: str
    module: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: dict[str, str]
    alignment: str = "chip"
    frame_padding: float = 0.25
    _batch: int | None = field(default=None, repr=False, compare=False)  # cached batch_size()

    #: largest activation of one forward batch; glibc serves blocks below ~32 MiB from its heap and
    #: maps larger ones afresh on every forward, page-faulting them in (2-4x slower measured on 2 cores)
    BATCH_BYTES = 16 * 2**20

    def _dtype_device(self, default_device: torch.device | str = "cpu") -> tuple[torch.dtype, torch.device]:
        """The module's parameter dtype and device (float32 and ``default_device`` without any)."""
        p = next(itertools.chain(self.module.parameters(), self.module.buffers()), None)
        return (p.dtype, p.device) if p is not None else (torch.float32, torch.device(default_device))

    def batch_size(self) -> int:
        """Images per no-grad forward: as many as keep the largest activation below
        :attr:`BATCH_BYTES` (measured once on one blank image), 1 to 64."""
        if self._batch is None:
            largest = 0

            def hook(_module, _inputs, output):
                nonlocal largest
                if isinstance(output, torch.Tensor):
                    largest = max(largest, output.numel() * output.element_size())

            leaves = [m for m in self.module.modules() if not list(m.children())]
            handles = [m.register_forward_hook(hook) for m in leaves]
            try:
                dtype, device = self._dtype_device()
                with torch.no_grad():
                    self.module(torch.zeros(1, 3, *self.input_size, dtype=dtype, device=device))
            finally:
                for h in handles:
                    h.remove()
            self._batch = int(max(1, min(64, self.BATCH_BYTES // max(largest, 1))))
        return self._batch

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 aligned frames -> (B, D) float32 unit embeddings, no graph, in
        batches of :meth:`batch_size`."""
        out = []
        with torch.no_grad():
            for i in range(0, len(frames), self.batch_size()):
                out.append(F.normalize(self.module(self.preprocess(frames[i : i + self.batch_size()])).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0)

    def window(self, size: int) -> tuple[int, int, int, int]:
        """The box of a ``size`` px aligned frame this model sees (:func:`leam.core.window.input_window`)."""
        return input_window(self.alignment, self.input_size, size, self.frame_padding)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 aligned frames -> (B, 3, H, W) normalised model input.

        The model's window of the frame (the whole frame for ``chip``) is resized to the input size
        with antialiased bilinear interpolation when the sizes differ, then normalised.
        dtype/device follow the module's parameters.
        """
        dtype, device = self._dtype_device(frames.device)
        x = frames.to(device=device).permute(0, 3, 1, 2).to(dtype)  # (B, 3, S, S)
        x = crop(x, self.window(x.shape[-1]), self.input_size)  # (B, 3, H, W)
        mean = torch.tensor(self.mean, dtype=dtype, device=device)[:, None, None]
        std = torch.tensor(self.std, dtype=dtype, device=device)[:, None, None]
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


def resolve_module(root: nn.Module, path: str, key: str | None = None) -> nn.Module:
    """``root.get_submodule(path)`` with an error naming ``key`` (the config key of the path) and
    the modules under the deepest part of ``path`` that exists."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_modules() if n]
        parts = path.split(".")
        parent = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in names), "")
        under = [n for n in names if n.startswith(parent + ".")] if parent else names
        shown = ", ".join(under[:40]) + (f", ... ({len(under)} in all)" if len(under) > 40 else "")
        where = f"modules under {parent!r}" if parent else "its modules"
        raise ValueError(
            f"{key + ': ' if key else ''}layer {path!r} is not a module of {type(root).__name__}; {where}: {shown}"
        ) from None


def preflight(
    name: str, spec: dict, *, base_dir: str | os.PathLike = ".", device: str = "auto", frame_padding: float = 0.25
) -> str:
    """Everything that would stop model ``name``'s extract job, checked before any other job:
    builder importable, weights present and matching, every layer a module, the device usable, one
    forward pass. Returns a one-line summary; raises with the config key to fix."""
    dev = pick_device(device)
    model = load_model(name, spec, base_dir=base_dir, device=dev, frame_padding=frame_padding)
    h, w = model.input_size
    with torch.no_grad():
        out = model.module(torch.zeros(1, 3, h, w, device=dev))
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(
            f"model '{name}': builder {spec['builder']} returns a module whose output is "
            f"{tuple(out.shape)} for one {h}x{w} image, not (1, D) embeddings"
        )
    return f"{name}: {spec['builder']} on {dev}, {len(model.layers)} layers, embedding dimension {out.shape[1]}"


def conv_modules(module: nn.Module, input_size: tuple[int, int]) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every convolution of ``module`` a LEAM layer can hook, in execution order: (module path,
    class name, output shape (C, H, W) for one ``input_size`` image). A convolution is a module with a
    4-D ``weight`` (``nn.Conv2d``, leam's TF.js and ONNX convolutions)."""
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    handles = []
    for path, m in module.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.ndim == 4:

            def hook(mod, _inputs, output, path=path):
                if path not in found and isinstance(output, torch.Tensor):
                    found[path] = (type(mod).__name__, tuple(output.shape[1:]))

            handles.append(m.register_forward_hook(hook))
    p = next(itertools.chain(module.parameters(), module.buffers()), None)
    try:
        with torch.no_grad():
            module(
                torch.zeros(
                    1,
                    3,
                    *input_size,
                    dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else "cpu",
                )
            )
    finally:
        for h in handles:
            h.remove()
    return [(path, cls, shape) for path, (cls, shape) in found.items()]


def load_model(
    name: str,
    spec: dict,
    *,
    base_dir: str | os.PathLike = ".",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    frame_padding: float = 0.25,
) -> FaceModel:
    """Build model ``name`` from its (validated) config entry ``spec``.

    ``frame_padding``: ``align.padding`` of the frames it will see (places an ``arcface`` window).

    The module is put in eval mode, moved to ``device``/``dtype`` and its parameters are frozen
    (``requires_grad=False``: LEAM needs activation gradients only).
    """
    path = weights_path(f"model '{name}'", spec.get("weights") or {}, f"models.{name}.weights.path", base_dir)
    module = import_builder(spec["builder"])(path, **spec.get("builder_args", {}))
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"model '{name}': builder {spec['builder']} returned {type(module).__name__}, not a torch.nn.Module"
        )
    module = module.eval().to(device=device, dtype=dtype)
    for p in module.parameters():
        p.requires_grad_(False)
    layers = dict(spec["layers"])
    for lname, path_ in layers.items():
        resolve_module(module, path_, key=f"models.{name}.layers.{lname}")
    pre = spec["preprocess"]
    return FaceModel(
        name=name,
        module=module,
        input_size=tuple(spec["input_size"]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        layers=layers,
        alignment=spec.get("alignment", "chip"),
        frame_padding=float(frame_padding),
    )
