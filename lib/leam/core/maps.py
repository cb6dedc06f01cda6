"""LEAM maps as data: the one storage codec, normalisation into the aligned frame, and the one
pixel ranking ("top-k pixels, ties by index") every stage uses.

Codec: a raw map (layer resolution, >= 0) is stored as ``height * width`` little-endian floats,
``float32`` (dtype ``f4``) or ``float16`` (``f2``, ``extract.store_maps: float16``, divided by the
map's maximum, which the ``scale`` column keeps), row-major
(:func:`encode_map` / :func:`encode_maps` / :func:`decode_map` / :func:`decode_maps`); decoding gives
float32.

Ranking: pixels by value descending, ties by pixel index ascending (row-major), i.e. the order of a
stable descending sort; every top-k selection is a prefix of it (:func:`top_indices`,
:class:`Ranking`, :func:`top_mask`, :func:`rank_below`).

Normalisation is LayerCAM's (and pytorch-grad-cam's ``scale_cam_image``): per map, subtract the
minimum and divide by ``max + 1e-7``, at layer resolution; then bilinear resize to the frame
(half-pixel centres, ``align_corners=False``, no antialiasing: the same sampling as OpenCV's
``INTER_LINEAR`` when upsampling). Values stay in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from leam.core.window import paste

__all__ = [
    "normalise",
    "to_frame",
    "encode_map",
    "encode_maps",
    "decode_map",
    "decode_maps",
    "Ranking",
    "top_indices",
    "top_mask",
    "rank_below",
    "EPS",
]

EPS = 1e-7
_MAX_CHUNK_BYTES = 2**31 - 1  # pa.binary()'s int32 offsets


def normalise(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(P, h, w) raw maps -> (P, h, w) in [0, 1]: (m - min) / (max(m - min) + eps) per map.

    ``eps`` is pytorch-grad-cam's 1e-7 (torchcam uses 1e-8).
    """
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(dim=1, keepdim=True).values
    flat = flat - lo
    hi = flat.max(dim=1, keepdim=True).values
    return (flat / (hi + eps)).reshape(maps.shape)


def to_frame(maps: torch.Tensor, size: int, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(P, h, w) raw maps -> (P, size, size) normalised maps in the aligned frame.

    ``window``: the frame box the model saw (:mod:`leam.core.window`); None: the whole frame. Frame
    pixels outside the window get 0.
    """
    return paste(normalise(maps), window if window is not None else (0, 0, size, size), size)


def encode_map(m: np.ndarray, dtype: str = "f4") -> bytes:
    """(h, w) map -> its stored bytes (``dtype`` f4 or f2, little-endian, row-major)."""
    return np.ascontiguousarray(m, dtype="<" + dtype).tobytes()


def encode_maps(maps: np.ndarray, dtype: str = "f4"):
    """(P, ...) maps -> a pyarrow binary column of P values, value i = ``encode_map(maps[i], dtype)``,
    built from one contiguous buffer (no Python object per map). ``dtype`` may be any numpy type
    code (``f4``, ``f2``; ``i4`` for pixel indices); little-endian.

    Returns a ``pa.ChunkedArray`` of ``pa.binary()`` (chunks stay under binary's 2 GiB offsets).
    """
    import pyarrow as pa

    data = np.ascontiguousarray(maps, dtype="<" + dtype)
    p = len(data)
    per = data[0].nbytes if p else 0
    step = max(1, _MAX_CHUNK_BYTES // max(per, 1))
    chunks = []
    for i in range(0, p, step):
        part = data[i : i + step]
        offsets = np.arange(len(part) + 1, dtype=np.int32) * np.int32(per)
        chunks.append(
            pa.Array.from_buffers(
                pa.binary(), len(part), [None, pa.py_buffer(offsets), pa.py_buffer(part.reshape(-1).view(np.uint8))]
            )
        )
    return pa.chunked_array(chunks, pa.binary())


def decode_map(row: Mapping) -> np.ndarray:
    """A maps-table row -> its raw map, (height, width) float32 (stored values times ``scale``)."""
    m = np.frombuffer(row["map"], "<" + (row.get("dtype") or "f4")).reshape(row["height"], row["width"])
    scale = row.get("scale")
    return m.astype(np.float32) * np.float32(scale) if scale not in (None, 1.0) else m.astype(np.float32, copy=False)


def decode_maps(column, height: int, width: int, dtype: str = "f4") -> np.ndarray:
    """A binary column (pyarrow array / chunked array / list of bytes) of maps of one shape and
    ``dtype`` -> (P, height, width) float32, without a Python object per map."""
    import pyarrow as pa

    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        parts = []
        for c in chunks:
            if len(c) == 0:
                continue
            c = c.cast(pa.large_binary()) if c.type == pa.binary() else c
            offsets = np.frombuffer(c.buffers()[1], np.int64)[c.offset : c.offset + len(c) + 1]
            data = np.frombuffer(c.buffers()[2], np.uint8)
            if not np.all(np.diff(offsets) == int(dtype[1]) * height * width):
                raise ValueError(f"{dtype} maps of {height}x{width} expected: some stored map has another size")
            parts.append(data[offsets[0] : offsets[-1]].view("<" + dtype))
        flat = np.concatenate(parts) if parts else np.empty(0, "<" + dtype)
    else:
        flat = np.frombuffer(b"".join(column), "<" + dtype)
    return flat.reshape(-1, height, width).astype(np.float32, copy=False)


def _ranked(v: torch.Tensor, k2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, N) values -> (indices, values), (P, k2) each: some k2 highest of each row (ties at the
    k2-th value taken arbitrarily), in stable descending order (value, then index)."""
    vals, idx = torch.topk(v, k2, dim=1, sorted=False)  # the order is made below
    by_index = torch.argsort(idx, dim=1)
    idx, vals = torch.gather(idx, 1, by_index), torch.gather(vals, 1, by_index)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return torch.gather(idx, 1, by_value), torch.gather(vals, 1, by_value)


def top_indices(v: torch.Tensor, k: int) -> torch.Tensor:
    """(P, N) values -> (P, k) indices of the k highest of each row in rank order (value descending,
    then index ascending: exactly the first k of a stable descending sort); k is clipped to [0, N].

    One unsorted ``topk`` of k plus a margin (rarely two) and two sorts of that many elements
    instead of a sort of N: when the k-th value is tied with the margin's last, every pixel tied
    with it is taken in, so ties at the cut are resolved by index as a full sort would.
    """
    n = v.shape[1]
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.empty(v.shape[0], 0, dtype=torch.long, device=v.device)
    k2 = min(n, k + max(16, k // 16))  # a margin, so that one topk usually holds every tie at the cut
    idx, vals = _ranked(v, k2)
    if k2 < n and bool((vals[:, k - 1] == vals[:, -1]).any()):  # a tie may straddle the margin: widen
        k2 = int((v >= vals[:, k - 1 : k]).sum(1).max())
        idx, vals = _ranked(v, k2)
    return idx[:, :k]


class Ranking:
    """One ranking of (P, N) values shared by every top-k selection made from them (counts, compare
    selections, occlusion rankings): ``top(k)`` equals ``top_indices(v, k)`` and is a prefix of the
    longest ranking asked for so far, which is computed once (ask for the longest first).
    """

    def __init__(self, v: torch.Tensor):
        self.v = v
        self._top = torch.empty(v.shape[0], 0, dtype=torch.long, device=v.device)

    def top(self, k: int) -> torch.Tensor:
        """(P, k) indices of the k highest of each row, in rank order."""
        k = max(0, min(int(k), self.v.shape[1]))
        if k > self._top.shape[1]:
            self._top = top_indices(self.v, k)
        return self._top[:, :k]


def top_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """(B, ...) maps -> bool of the same shape, True on the k highest pixels of each (ties by index)."""
    b = len(maps)
    flat = maps.reshape(b, -1)
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=maps.device)
    mask.scatter_(1, top_indices(flat, k), True)
    return mask.reshape(maps.shape)


def rank_below(v: torch.Tensor, k: torch.Tensor, ranking: Ranking | None = None) -> torch.Tensor:
    """(P, N) values, (P,) sizes -> (P, N) bool: True on the k[i] highest pixels of row i.

    ``ranking``: a :class:`Ranking` of ``v`` (or of values in the same order) to reuse.
    """
    kmax = int(k.max()) if k.numel() else 0
    order = (ranking or Ranking(v)).top(kmax)  # (P, kmax)
    keep = torch.arange(kmax, device=v.device)[None, :] < k[:, None]
    mask = torch.zeros(v.shape, dtype=torch.bool, device=v.device)
    mask.scatter_(1, order, keep)
    return mask
