"""Hook lifecycle: record layer activations during a forward pass, and cut the graph below them.

:class:`ActivationRecorder` is a context manager that owns its forward hooks, puts the model in
eval mode and gives both back on exit. With ``cut=True`` the output of the first hooked layer to
run becomes a fresh leaf tensor that requires grad, so a backward pass from the embedding stops
there instead of running down to the input (parameters are frozen by the model loader). If some
hooked layer does not depend on that first one (parallel branches), the recorder says so and the
caller falls back to making the input require grad.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from leam.models.loader import resolve_module

__all__ = ["ActivationRecorder"]


class ActivationRecorder:
    """Record the outputs of ``layers`` ({name: module path}) of ``model`` on each forward.

    After a forward, :attr:`activations` maps layer name -> (B, C, h, w) tensor (part of the
    autograd graph) and :attr:`order` lists layer names in execution order.
    """

    def __init__(self, model: nn.Module, layers: dict[str, str], *, cut: bool = True):
        self.model = model
        self.layers = dict(layers)
        self.cut = cut
        self.activations: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self._handles: list = []
        self._was_training = model.training

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise RuntimeError(
                    f"layer {name!r} ({self.layers[name]}) returned "
                    f"{type(output).__name__} {getattr(output, 'shape', '')}; LEAM needs a (B, C, H, W) tensor"
                )
            if name in self.activations:
                raise RuntimeError(
                    f"layer {name!r} ({self.layers[name]}) ran twice in one forward pass; "
                    "choose a module that is called once"
                )
            if self.cut and not self.order:
                output = output.detach().requires_grad_(True)
            self.activations[name] = output
            self.order.append(name)
            return output

        return hook

    def reset(self) -> None:
        self.activations = {}
        self.order = []

    def dominated(self) -> bool:
        """True if every recorded activation depends on the cut (first) one."""
        return all(a.requires_grad for a in self.activations.values())

    def __enter__(self) -> ActivationRecorder:
        self._was_training = self.model.training
        self.model.eval()
        for name, path in self.layers.items():
            self._handles.append(resolve_module(self.model, path).register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.reset()
        self.model.train(self._was_training)
