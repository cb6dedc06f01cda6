"""LEAM extraction: hook lifecycle (:mod:`.core`) and the batched engine (:mod:`.leam`)."""

from .core import ActivationRecorder
from .leam import LEAM, IdentityMaps

__all__ = ["ActivationRecorder", "LEAM", "IdentityMaps"]
