"""Per-class pixel counts of LEAM maps at the paper's relevance selections, batched on device.

Selections of a normalised map (values in [0, 1], in the aligned frame, N pixels):

* ``full``: pixels with value >= ``full_threshold`` (0.01 in the paper: "exclude only marginally
  activated pixels"); call their number ``n_active``;
* ``top{k}`` for the paper's 15 levels k = 0.01 ... 100 (%): the ``ceil(k/100 * n_active)``
  highest pixels (``topk_of="active"``, default) or ``ceil(k/100 * N)`` (``topk_of="all"``).
  With "active", top100 equals full, as the 100 % column of the paper's Appendix B tables equals
  its full-activation Table 10; rounding up keeps at least one pixel when any is active.

Pixels are ranked by value, ties by pixel index (row-major), so selections are deterministic and
nested: every top-k selection is a prefix of one stable descending ranking. Counting all 16 costs
two ``topk`` over the map, a sort of the longest prefix needed (10 % of the active pixels with the
paper's levels), and two ``bincount`` per batch of maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from leam.core.classes import N_CLASSES
from leam.core.maps import Ranking, rank_below
from leam.core.selection import hundredths

__all__ = ["selection_sizes", "select", "count_classes"]


def selection_sizes(n_active: torch.Tensor, n_pixels: int, levels: Sequence[float], topk_of: str) -> torch.Tensor:
    """(P,) active counts -> (P, 1 + L) selection sizes (full first), int64.

    ``ceil(level / 100 * base)`` computed in exact integer arithmetic on hundredths of a percent
    (levels must be multiples of 0.01 %).
    """
    base = n_active if topk_of == "active" else torch.full_like(n_active, n_pixels)
    cols = [n_active]
    for level in levels:
        q = hundredths(level)
        cols.append(torch.div(base * q + 9999, 10000, rounding_mode="floor"))  # ceil(base * q / 10^4)
    return torch.stack(cols, dim=1)


def select(
    frames: torch.Tensor, selection: str, full_threshold: float = 0.01, ranking: Ranking | None = None
) -> torch.Tensor:
    """(P, S, S) normalised maps -> the same with pixels outside the selection set to 0.

    ``full``: values >= full_threshold; ``top{k}``: the ceil(k % of the activated pixels) highest
    (ties by pixel index, as in :mod:`leam.core.counting`); ``ranking``: a :class:`leam.core.maps.Ranking`
    of the maps' pixels (in any dtype) to share.
    """
    p = len(frames)
    v = frames.reshape(p, -1)
    active = v >= full_threshold
    if selection == "full":
        return (v * active).reshape(frames.shape)
    level = float(selection.removeprefix("top"))
    k = selection_sizes(active.sum(1), v.shape[1], [level], "active")[:, 1]  # (P,)
    return (v * rank_below(v, k, ranking)).reshape(frames.shape)


def count_classes(
    maps: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: Sequence[float],
    full_threshold: float,
    topk_of: str,
    n_classes: int = N_CLASSES,
    ranking: Ranking | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels per class for every selection of every map.

    Args:
        maps: (P, S, S) normalised maps in [0, 1].
        labels: (P, S, S) integer class ids (< n_classes), the anchor image's parser labels.
        ranking: a :class:`leam.core.maps.Ranking` of ``maps.reshape(P, -1)`` to share (None: made here).
    Returns:
        counts: (P, 1 + L, n_classes) int64, selection order ``selection_names(levels)``;
        n_selected: (P, 1 + L) int64 (= counts.sum(-1)).

    Selections that are the whole base set (``full``; ``top100`` of the active pixels; any level
    whose rounded size reaches the base) are counted from a mask; the others are prefixes of the
    ranking, of which only the longest needed prefix is ranked (:class:`leam.core.maps.Ranking`).
    """
    if maps.shape != labels.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and labels {tuple(labels.shape)} differ")
    if topk_of not in ("active", "all"):
        raise ValueError(f"topk_of must be 'active' or 'all', not {topk_of!r}")
    p = len(maps)
    v = maps.reshape(p, -1)
    lab = labels.reshape(p, -1).long()
    n = v.shape[1]
    dev = v.device
    active = v >= full_threshold
    n_active = active.sum(1)
    sizes = selection_sizes(n_active, n, levels, topk_of)  # (P, S)
    s = sizes.shape[1]
    base = (n_active if topk_of == "active" else torch.full_like(n_active, n))[:, None]  # (P, 1)
    rows = torch.arange(p, device=dev)[:, None]
    # whole-set selections: "full" (the active pixels) and, with topk_of="all", the whole frame
    counts = torch.zeros(p, s, n_classes, dtype=torch.long, device=dev)
    key = rows * n_classes + lab  # (P, N) bin of (map, class)
    full = torch.bincount(torch.where(active, key, p * n_classes).reshape(-1), minlength=p * n_classes + 1)[:-1].view(
        p, n_classes
    )  # inactive -> a dropped bin
    whole = full if topk_of == "active" else torch.bincount(key.reshape(-1), minlength=p * n_classes).view(p, n_classes)
    is_whole = sizes[:, 1:] >= base  # (P, L): the level takes the whole base set
    counts[:, 0] = full
    counts[:, 1:] = torch.where(is_whole[..., None], whole[:, None, :], 0)
    ranked_sizes = torch.where(is_whole, 0, sizes[:, 1:])  # (P, L) prefix lengths still to count
    kcap = int(ranked_sizes.max()) if ranked_sizes.numel() else 0
    if kcap > 0:
        order = (ranking or Ranking(v)).top(kcap)  # (P, kcap)
        lab_ranked = torch.gather(lab, 1, order)  # (P, kcap)
        sorted_sizes, perm = torch.sort(ranked_sizes, dim=1, stable=True)
        pos = torch.arange(kcap, device=dev).expand(p, kcap).contiguous()
        bucket = torch.searchsorted(sorted_sizes.contiguous(), pos, right=True)  # (P, kcap) in [0, L]
        nl = ranked_sizes.shape[1]
        flat = (rows * (nl + 1) + bucket) * n_classes + lab_ranked
        hist = torch.bincount(flat.reshape(-1), minlength=p * (nl + 1) * n_classes).view(p, nl + 1, n_classes)
        cum = hist.cumsum(1)[:, :nl]  # counts of the sorted prefixes
        ranked = torch.empty_like(cum)
        ranked.scatter_(1, perm[:, :, None].expand(-1, -1, n_classes), cum)
        counts[:, 1:] = torch.where(is_whole[..., None], counts[:, 1:], ranked)
    return counts, sizes
