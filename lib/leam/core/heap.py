"""Keep a photo-decoding process's memory flat: large buffers mapped on their own.

glibc's malloc serves a request of at least its mmap threshold with a mapping of its own, returned
to the system when freed; but after the first such buffer is freed it raises that threshold (up to
32 MiB on 64-bit), and from then on decoded photos and warped frames are carved from the heap,
which fragments and keeps growing with the number of photos a process handles. Measured with
``benchmarks/stage_memory.py`` (the align stage, 53 -> 1993 photos in one shard): peak RSS 793 ->
1280 MB with glibc's default, 780 -> 898 MB with the threshold fixed at 64 KiB.
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["map_large_buffers"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


@functools.cache
def map_large_buffers(threshold: int = 64 * 1024) -> bool:
    """Fix malloc's mmap threshold at ``threshold`` bytes for this process (glibc); True when set,
    False where the C library is not glibc (nothing changes there). Results are unaffected: only
    where the allocator places memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
