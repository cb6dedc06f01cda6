"""Extraction plumbing: prefetching keeps order and passes errors on."""

from __future__ import annotations

import pytest

from leam.core.frames import prefetch


def test_prefetch_keeps_order_and_raises():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad frame")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad frame"):
        next(it)
