"""LEAM extraction: hook lifecycle (:mod:`.core`) and the batched engine (:mod:`.leam`)."""

from leam.cam.core import ActivationRecorder
from leam.cam.leam import LEAM, IdentityMaps

__all__ = ["ActivationRecorder", "LEAM", "IdentityMaps"]
