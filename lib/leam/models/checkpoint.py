"""Reading PyTorch checkpoints safely: ``torch.load(weights_only=True)``, keys checked up front.

Untrusted checkpoints are never unpickled: ``weights_only=True`` only rebuilds tensors and plain
containers. The only renames are the common wrappers (one place, :data:`UNWRAP` and
:data:`STRIP_PREFIXES`); everything else must match the model's own keys exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from leam.models.weights import WeightsError

__all__ = ["WeightsError", "load_state_dict_file", "UNWRAP", "STRIP_PREFIXES"]


#: containers some training scripts save around the state dict
UNWRAP = ("state_dict", "model", "backbone")
#: prefixes added by DataParallel / DistributedDataParallel
STRIP_PREFIXES = ("module.",)


def load_state_dict_file(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` without unpickling code; check it against ``model``.

    Raises:
        WeightsError: unreadable file, or keys / shapes that do not match ``model``'s.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not a usable checkpoint
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    for key in UNWRAP:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for prefix in STRIP_PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    if model is not None and (parts := _mismatches(obj, model.state_dict())):
        raise WeightsError(
            f"{path} does not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Is it the checkpoint of this architecture?"
        )
    return obj


def _mismatches(obj: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> list[str]:
    """How a state dict ``obj`` differs from a model's own ``own``: missing and unexpected keys,
    shape mismatches (a few examples of each); empty when it fits."""
    missing = sorted(set(own) - set(obj))
    unexpected = sorted(set(obj) - set(own))
    shapes = [
        f"{k}: file {tuple(obj[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in obj and obj[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
    return parts
