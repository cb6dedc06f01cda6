"""Per-class pixel counts of LEAM maps at the paper's relevance selections, batched on device.

Selections of a normalised map (values in [0, 1], in the aligned frame, N pixels):

* ``full``: pixels with value >= ``full_threshold`` (0.01 in the paper: "exclude only marginally
  activated pixels"); call their number ``n_active``;
* ``top{k}`` for the paper's 15 levels k = 0.01 ... 100 (%): the ``ceil(k/100 * n_active)``
  highest pixels (``topk_of="active"``, default) or ``ceil(k/100 * N)`` (``topk_of="all"``).
  With "active", top100 equals full, as the 100 % column of the paper's Appendix B tables equals
  its full-activation Table 10; rounding up keeps at least one pixel when any is active.

Pixels are ranked by value, ties by pixel index (row-major), so selections are deterministic and
nested: every selection is a prefix of one stable descending sort, and counting all 16 costs one
sort and one ``bincount`` per batch of maps.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from .classes import CLASS_COLUMNS, N_CLASSES
from .io import write_parquet
from .maps import to_frame
from .parsing import visible_classes

__all__ = ["LEVELS", "selection_names", "selection_sizes", "count_classes", "count_shard", "COUNTS_SCHEMA"]

log = logging.getLogger(__name__)

#: the paper's relevance levels, % of pixels (section 4.6)
LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3, 5, 10, 100)


def selection_names(levels: Sequence[float]) -> list[str]:
    """``["full", "top0.01", ..., "top100"]``."""
    return ["full"] + [f"top{level:g}" for level in levels]


def selection_sizes(n_active: torch.Tensor, n_pixels: int, levels: Sequence[float], topk_of: str) -> torch.Tensor:
    """(P,) active counts -> (P, 1 + L) selection sizes (full first), int64.

    ``ceil(level / 100 * base)`` computed in exact integer arithmetic on hundredths of a percent
    (levels must be multiples of 0.01 %).
    """
    base = n_active if topk_of == "active" else torch.full_like(n_active, n_pixels)
    cols = [n_active]
    for level in levels:
        q = round(level * 100)  # level in 1/100 %
        if not math.isclose(q, level * 100, abs_tol=1e-6):
            raise ValueError(f"level {level} % is not a multiple of 0.01 %")
        cols.append(torch.div(base * q + 9999, 10000, rounding_mode="floor"))  # ceil(base * q / 10^4)
    return torch.stack(cols, dim=1)


def count_classes(maps: torch.Tensor, labels: torch.Tensor, *, levels: Sequence[float] = LEVELS,
                  full_threshold: float = 0.01, topk_of: str = "active",
                  n_classes: int = N_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels per class for every selection of every map.

    Args:
        maps: (P, S, S) normalised maps in [0, 1].
        labels: (P, S, S) integer class ids (< n_classes), the anchor image's parser labels.
    Returns:
        counts: (P, 1 + L, n_classes) int64, selection order ``selection_names(levels)``;
        n_selected: (P, 1 + L) int64 (= counts.sum(-1)).
    """
    if maps.shape != labels.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and labels {tuple(labels.shape)} differ")
    if topk_of not in ("active", "all"):
        raise ValueError(f"topk_of must be 'active' or 'all', not {topk_of!r}")
    p = len(maps)
    v = maps.reshape(p, -1)
    lab = labels.reshape(p, -1).long()
    n = v.shape[1]
    order = torch.sort(v, dim=1, descending=True, stable=True).indices  # (P, N)
    lab_sorted = torch.gather(lab, 1, order)
    n_active = (v >= full_threshold).sum(1)
    sizes = selection_sizes(n_active, n, levels, topk_of)  # (P, S)
    s = sizes.shape[1]
    sizes_sorted, perm = torch.sort(sizes, dim=1, stable=True)
    pos = torch.arange(n, device=v.device).expand(p, n).contiguous()
    bucket = torch.searchsorted(sizes_sorted.contiguous(), pos, right=True)  # (P, N) in [0, S]
    flat = (torch.arange(p, device=v.device)[:, None] * (s + 1) + bucket) * n_classes + lab_sorted
    hist = torch.bincount(flat.reshape(-1), minlength=p * (s + 1) * n_classes).reshape(p, s + 1, n_classes)
    cum = hist.cumsum(1)[:, :s]  # counts of the sorted selections
    counts = torch.empty_like(cum)
    counts.scatter_(1, perm[:, :, None].expand(-1, -1, n_classes), cum)
    return counts, sizes


COUNTS_SCHEMA = pa.schema(
    [("model", pa.string()), ("layer", pa.string()), ("layer_idx", pa.int16()), ("identity", pa.string()),
     ("anchor", pa.string()), ("positive", pa.string()), ("parser", pa.string()), ("selection", pa.string()),
     ("level", pa.float64()), ("n_selected", pa.int32()), ("n_pixels", pa.int32())]
    + [(c, pa.int32()) for c in CLASS_COLUMNS]
)


def count_shard(maps, labels, out_path: str, *, levels: Sequence[float] = LEVELS, full_threshold: float = 0.01,
                topk_of: str = "active", device: str = "cpu", batch: int = 256):
    """Count stage for one model x shard: maps table + labels table -> wide counts table.

    One row per (map, selection); one int32 column per class (``c10_nose``...), NULL for classes
    the parser cannot see. ``level`` is NULL for ``full``.
    """
    lab_rows = labels.to_pylist()
    parser = lab_rows[0]["parser"] if lab_rows else "landmarks"
    visible = set(visible_classes(parser))
    lab = {(r["identity"], r["image"]): np.frombuffer(r["labels"], np.uint8).reshape(r["size"], r["size"])
           for r in lab_rows}
    names = selection_names(levels)
    levels_col = [None] + [float(x) for x in levels]
    cols: dict[str, list] = {f.name: [] for f in COUNTS_SCHEMA}
    rows = maps.to_pylist()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        # maps of one layer share a shape; group within the chunk by shape
        for shape in sorted({(r["height"], r["width"]) for r in chunk}):
            part = [r for r in chunk if (r["height"], r["width"]) == shape]
            raw = torch.from_numpy(np.stack([np.frombuffer(r["map"], "<f4").reshape(shape) for r in part])).to(device)
            lb = [lab[(r["identity"], r["anchor"])] for r in part]
            size = lb[0].shape[0]
            frame = to_frame(raw, size)
            counts, sizes = count_classes(frame, torch.from_numpy(np.stack(lb)).to(device), levels=levels,
                                          full_threshold=full_threshold, topk_of=topk_of)
            counts, sizes = counts.cpu().numpy(), sizes.cpu().numpy()
            for i, r in enumerate(part):
                for s, name in enumerate(names):
                    for k in ("model", "layer", "layer_idx", "identity", "anchor", "positive"):
                        cols[k].append(r[k])
                    cols["parser"].append(parser)
                    cols["selection"].append(name)
                    cols["level"].append(levels_col[s])
                    cols["n_selected"].append(int(sizes[i, s]))
                    cols["n_pixels"].append(size * size)
                    for c, col in enumerate(CLASS_COLUMNS):
                        cols[col].append(int(counts[i, s, c]) if c in visible else None)
        log.info("counted %d/%d maps", min(start + batch, len(rows)), len(rows))
    table = pa.table(cols, schema=COUNTS_SCHEMA)  # rows in the maps table's order
    write_parquet(table, out_path)
    return table
