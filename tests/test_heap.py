"""leam.core.heap: after a large buffer is freed, glibc serves the next large ones from the heap
(fragmenting it as photos come and go) unless the mmap threshold is fixed; the oracle is glibc's own
chunk header (the IS_MMAPPED bit of the size word before a malloc'd pointer)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
if sys.argv[1] == "fixed":
    from leam.core.heap import map_large_buffers
    assert map_large_buffers()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(16 << 20)  # a decoded photo: mapped (above the initial 128 KiB threshold, below 32 MiB)
libc.free(big)               # glibc now raises its threshold to 16 MiB (unless it was fixed)
p = libc.malloc(1 << 20)     # the next 1 MiB buffer
print(ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 2)  # IS_MMAPPED
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux) only")
def test_large_buffers_stay_mapped_after_a_large_free_once_the_threshold_is_fixed():
    def mapped(mode: str) -> bool:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return out.stdout.strip() == "2"

    assert not mapped("default")  # glibc's dynamic threshold: the 1 MiB buffer comes from the heap
    assert mapped("fixed")
