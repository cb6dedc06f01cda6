"""The torch device of every torch stage (config ``device``; ``--device`` of the CLI)."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(device: str = "auto", *, key: str = "device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, which must exist here.
    ``key``: what the user set it with, for the message (the config key, or a CLI flag)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index or 0) >= n:
            raise RuntimeError(
                f"{key} is {device!r} but this machine has {n} CUDA GPU(s) "
                f"(torch {torch.__version__}): set {key} auto (or cpu), or run where the GPU is"
            )
    return dev
