"""Compare stage: are one person's LEAM maps more alike than two people's? (paper RQ3, Tables 3-6)

Per model, layer and image, the image's map is the mean over its positives of its LEAM maps, each
normalised, resized to the aligned frame and reduced to a selection (``top1``: its top 1 % of the
activated pixels, as the paper's Tables 3-6; ``full``: every activated pixel), then divided by its
sum: a 2-D distribution. Pairs compared:

* same identity: every unordered pair of images of one identity (the frames are aligned to the
  identity's reference, so pixels correspond);
* different identity: for every image, ``different_per_image`` images of other identities drawn
  with the seed (frames of different identities share dlib's chip geometry, not a reference).

Measures: Bhattacharyya coefficient on the full frame, and exact EMD (POT) on a ``grid`` x ``grid``
coarsening with the Euclidean ground distance in frame pixels (:mod:`leam.similarity`).
"""

from __future__ import annotations

import logging
import zlib
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from .counting import selection_sizes
from .io import write_parquet
from .maps import decode_map, map_window, to_frame
from .similarity import bhattacharyya, coarsen, emd_exact, to_distribution

__all__ = ["image_maps", "select", "compare_model", "COMPARE_SCHEMA"]

log = logging.getLogger(__name__)

COMPARE_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("layer", pa.string()),
    ("layer_idx", pa.int16()),
    ("selection", pa.string()),
    ("kind", pa.string()),  # same / different
    ("identity_a", pa.string()),
    ("image_a", pa.string()),
    ("identity_b", pa.string()),
    ("image_b", pa.string()),
    ("bc", pa.float64()),
    ("emd", pa.float64()),
])


def select(frames: torch.Tensor, selection: str, full_threshold: float = 0.01) -> torch.Tensor:
    """(P, S, S) normalised maps -> the same with pixels outside the selection set to 0.

    ``full``: values >= full_threshold; ``top{k}``: the ceil(k % of the activated pixels) highest
    (ties by pixel index, as in :mod:`leam.counting`).
    """
    p = len(frames)
    v = frames.reshape(p, -1)
    active = v >= full_threshold
    if selection == "full":
        return (v * active).reshape(frames.shape)
    level = float(selection.removeprefix("top"))
    k = selection_sizes(active.sum(1), v.shape[1], [level], "active")[:, 1]  # (P,)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(v.shape[1], device=v.device).expand(p, -1))
    return (v * (rank < k[:, None])).reshape(frames.shape)


def image_maps(maps: pa.Table, size: int, selection: str, full_threshold: float = 0.01):
    """{(layer_idx, layer): {(identity, image): (S, S) distribution}} from a raw-maps table."""
    out: dict[tuple[int, str], dict[tuple[str, str], torch.Tensor]] = {}
    groups: dict[tuple, list[np.ndarray]] = {}
    windows: dict[tuple, tuple[int, int, int, int]] = {}
    for r in maps.to_pylist():
        key = (r["layer_idx"], r["layer"], r["identity"], r["anchor"])
        groups.setdefault(key, []).append(decode_map(r))
        windows[key] = map_window(r, size)
    for key, raws in sorted(groups.items()):
        li, layer, identity, anchor = key
        frames = select(to_frame(torch.from_numpy(np.stack(raws)).double(), size, windows[key]), selection, full_threshold)
        dist = to_distribution(frames).mean(0)
        out.setdefault((li, layer), {})[(identity, anchor)] = dist
    return out


def _pairs(images: Sequence[tuple[str, str]], different_per_image: int, seed: int):
    same, diff = [], []
    for i, a in enumerate(images):
        for b in images[i + 1:]:
            if a[0] == b[0]:
                same.append((a, b))
    for a in images:
        others = [b for b in images if b[0] != a[0]]
        if not others:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"{a[0]}/{a[1]}".encode())])
        for j in rng.choice(len(others), size=min(different_per_image, len(others)), replace=False):
            diff.append((a, others[j]))
    return same, diff


def compare_model(maps: pa.Table, out_path: str, *, model: str, size: int, selections: Sequence[str] = ("top1",),
                  grid: int = 16, different_per_image: int = 5, seed: int = 0, full_threshold: float = 0.01) -> pa.Table:
    """Compare stage for one model: BC and EMD of same- and different-identity image maps."""
    rows = []
    for selection in selections:
        per_layer = image_maps(maps, size, selection, full_threshold)
        for (li, layer), dists in per_layer.items():
            images = sorted(dists)
            same, diff = _pairs(images, different_per_image, seed)
            for kind, pairs in (("same", same), ("different", diff)):
                if not pairs:
                    continue
                p = torch.stack([dists[a] for a, _ in pairs])
                q = torch.stack([dists[b] for _, b in pairs])
                bc = bhattacharyya(p, q).tolist()
                pc, qc = coarsen(p, grid).numpy(), coarsen(q, grid).numpy()
                emd = [emd_exact(x, y, size) for x, y in zip(pc, qc)]
                rows += [{"model": model, "layer": layer, "layer_idx": li, "selection": selection, "kind": kind,
                          "identity_a": a[0], "image_a": a[1], "identity_b": b[0], "image_b": b[1],
                          "bc": float(bc_i), "emd": float(e)}
                         for (a, b), bc_i, e in zip(pairs, bc, emd)]
            log.info("%s %s %s: %d same-identity, %d different-identity pairs", model, layer, selection,
                     len(same), len(diff))
    table = pa.Table.from_pylist(rows, schema=COMPARE_SCHEMA)
    write_parquet(table, out_path)
    return table
