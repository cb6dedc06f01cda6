"""What the extract job keeps of the LEAM maps, computed while they are in memory.

Every downstream stage needs far less than every raw map of every pair, so the extract job turns
each chunk of maps (still on the device) into the aligned frame once (:func:`leam.core.maps.to_frame`)
and derives from it:

* ``counts``: pixels per parser class at every relevance selection (:mod:`leam.core.counting`), one
  row per (pair, layer, selection);
* ``image maps`` (compare, atlas): per (layer, image) the mean over the image's positives of
  each compare selection's distribution (``top1``: the top 1 % of the activated pixels, divided
  by its sum; :func:`leam.core.counting.select`), and, at the occlusion source layer, the ``mean`` of
  the normalised frame maps (the image's "own" atlas map); (S, S) float32 each;
* ``rankings`` (occlusion), at the occlusion source layer only: per pair the first ``k_max``
  pixels of the frame map's ranking (value descending, ties by index: :mod:`leam.core.maps`), where
  ``k_max`` is the pixel count of the largest occlusion size; every smaller size's mask is a prefix;
  and ``n_relevant``, the map's pixels above 0 (a size past it has no LEAM pixels to occlude);
* ``maps`` (optional, ``extract.store_maps``): the raw maps at layer resolution, for figures and
  for your own analyses: ``raw`` (float32, every pair), ``float16`` (every pair, half the bytes:
  each map divided by its maximum, kept in ``scale``; error <= 2^-11 of the map's maximum) or
  ``first_pair`` (float32, each identity's first ordered pair only: what the layer figure draws).
  Nothing downstream reads them for numbers: counts, compare and
  occlusion results are the same bytes whatever is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from leam.core.classes import CLASS_COLUMNS
from leam.core.counting import count_classes, select
from leam.core.maps import Ranking, encode_maps, to_frame
from leam.core.selection import selection_names
from leam.core.similarity import to_distribution
from leam.core.tables import COUNTS_SCHEMA, IMAGE_MAPS_SCHEMA, MAPS_SCHEMA, RANKINGS_SCHEMA

__all__ = ["STORE_MAPS", "IdentitySummaries", "counts_table"]

#: extract.store_maps choices
STORE_MAPS = ("raw", "float16", "first_pair")


def counts_table(
    key: dict,
    layer: str,
    layer_idx: int,
    anchors: Sequence[str],
    positives: Sequence[str],
    counts: np.ndarray,
    sizes: np.ndarray,
    *,
    parser: str,
    visible: set[int],
    levels: Sequence[float],
    n_pixels: int,
) -> pa.Table:
    """Rows of the counts table for P pairs of one layer: P x (1 + L) rows, pair-major.

    counts: (P, 1 + L, C) int; sizes: (P, 1 + L) int; classes not in ``visible`` are NULL.
    """
    p, s = sizes.shape
    names = selection_names(levels)
    rep = lambda v: pa.array(np.repeat(np.asarray(v, dtype=object), s), pa.string())  # noqa: E731
    cols = {
        "model": pa.array([key["model"]] * (p * s), pa.string()),
        "layer": pa.array([layer] * (p * s), pa.string()),
        "layer_idx": pa.array(np.full(p * s, layer_idx, np.int16)),
        "identity": pa.array([key["identity"]] * (p * s), pa.string()),
        "anchor": rep(anchors),
        "positive": rep(positives),
        "parser": pa.array([parser] * (p * s), pa.string()),
        "selection": pa.array(names * p, pa.string()),
        "level": pa.array(([None] + [float(x) for x in levels]) * p, pa.float64()),
        "n_selected": pa.array(sizes.reshape(-1).astype(np.int32)),
        "n_pixels": pa.array(np.full(p * s, n_pixels, np.int32)),
    }
    flat = counts.reshape(p * s, -1).astype(np.int32)
    null = pa.nulls(p * s, pa.int32())
    for c, col in enumerate(CLASS_COLUMNS):
        cols[col] = pa.array(flat[:, c]) if c in visible else null
    return pa.table(cols, schema=COUNTS_SCHEMA)


class IdentitySummaries:
    """A :class:`leam.cam.MapConsumer` for one identity: frames once per chunk, then counts, image
    maps, rankings and the raw maps to store.

    Args:
        labels: (n, S, S) parser class ids of the identity's n images (anchors index them).
        window: the frame box the model saw (:mod:`leam.core.window`).
        selections: compare selections (image maps of each, every layer).
        rank_layer: the occlusion source layer of this model (None: not a source), ``k_max`` its
            ranking length; its ``mean`` image maps are kept too.
        store_maps: see :data:`STORE_MAPS`.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        window: tuple[int, int, int, int],
        *,
        levels: Sequence[float],
        full_threshold: float,
        topk_of: str,
        selections: Sequence[str],
        store_maps: str,
        rank_layer: str | None = None,
        k_max: int = 0,
    ):
        if store_maps not in STORE_MAPS:
            raise ValueError(f"store_maps must be one of {STORE_MAPS}, not {store_maps!r}")
        self.labels = labels.long()
        self.n, self.size = labels.shape[0], labels.shape[-1]
        x0, y0, x1, y1 = window
        self.window = (x0, y0, x1, y1)
        self.count_kw: dict[str, Any] = dict(levels=levels, full_threshold=full_threshold, topk_of=topk_of)
        self.selections = list(selections)
        self.rank_layer, self.k_max = rank_layer, int(k_max)
        self.store_maps = store_maps
        # per layer, lists of per-chunk parts (pairs sorted by (anchor, positive) inside a chunk)
        self.pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.counts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.image_maps: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.rankings: dict[str, list[np.ndarray]] = {}
        self.relevant: dict[str, list[np.ndarray]] = {}
        self.raw: dict[str, list[np.ndarray]] = {}

    def add(self, layer: str, anchor: torch.Tensor, positive: torch.Tensor, maps: torch.Tensor) -> None:
        order = torch.argsort(anchor * self.n + positive)  # chunk order -> (anchor, positive) order
        anchor, positive, maps = anchor[order], positive[order], maps[order]
        frame = to_frame(maps.float(), self.size, self.window)  # (P, S, S) float32 in [0, 1]
        ranking = Ranking(frame.reshape(len(frame), -1))  # one ranking for every top-k below
        if layer == self.rank_layer and self.k_max > 0:  # the longest prefix first
            self.rankings.setdefault(layer, []).append(ranking.top(self.k_max).to(torch.int32).cpu().numpy())
            self.relevant.setdefault(layer, []).append((ranking.v > 0).sum(1).to(torch.int32).cpu().numpy())
        counts, sizes = count_classes(frame, self.labels[anchor], **self.count_kw, ranking=ranking)
        a_np, p_np = anchor.cpu().numpy(), positive.cpu().numpy()
        self.pairs.setdefault(layer, []).append((a_np, p_np))
        self.counts.setdefault(layer, []).append((counts.cpu().numpy(), sizes.cpu().numpy()))
        anchors, inverse, n_pos = torch.unique_consecutive(anchor, return_inverse=True, return_counts=True)

        def distribution(sel: str) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda f: to_distribution(select(f, sel, self.count_kw["full_threshold"], ranking))

        kinds = [(sel, distribution(sel)) for sel in self.selections]
        if layer == self.rank_layer:
            kinds.append(("mean", lambda f: f))
        f64 = frame.double()
        for kind, fn in kinds:
            total = torch.zeros(len(anchors), self.size, self.size, dtype=torch.float64, device=frame.device)
            total.index_add_(0, inverse, fn(f64))
            mean = (total / n_pos[:, None, None]).float()
            self.image_maps.setdefault((layer, kind), []).append(
                (anchors.cpu().numpy(), n_pos.cpu().numpy(), mean.cpu().numpy())
            )
        if self.store_maps == "first_pair":
            first = (anchor == 0) & (positive == 1)
            if bool(first.any()):
                self.raw.setdefault(layer, []).append(maps[first].float().cpu().numpy())
        else:
            self.raw.setdefault(layer, []).append(maps.float().cpu().numpy())

    # -- tables ---------------------------------------------------------------------------------
    def _pairs(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        parts = self.pairs.get(layer, [])
        return (
            (np.concatenate([a for a, _ in parts]), np.concatenate([p for _, p in parts]))
            if parts
            else (np.empty(0, int), np.empty(0, int))
        )

    def counts_of(self, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(anchor (P,), positive (P,), counts (P, 1 + L, C), sizes (P, 1 + L)) of one layer, by pair."""
        a, p = self._pairs(layer)
        return (
            a,
            p,
            np.concatenate([c for c, _ in self.counts[layer]]),
            np.concatenate([s for _, s in self.counts[layer]]),
        )

    def counts_rows(
        self, key: dict, layers: Sequence[str], images: Sequence[str], *, parser: str, visible: set[int]
    ) -> list[pa.Table]:
        out = []
        for li, layer in enumerate(layers):
            if layer not in self.counts:
                continue
            a, p, c, s = self.counts_of(layer)
            out.append(
                counts_table(
                    key,
                    layer,
                    li,
                    [images[i] for i in a],
                    [images[i] for i in p],
                    c,
                    s,
                    parser=parser,
                    visible=visible,
                    levels=self.count_kw["levels"],
                    n_pixels=self.size * self.size,
                )
            )
        return out

    def image_maps_table(self, key: dict, layers: Sequence[str], images: Sequence[str]) -> pa.Table:
        """Rows of the image-maps table, by layer, then kind (selections, then ``mean``), then image."""
        parts = []
        for li, layer in enumerate(layers):
            for kind in self.selections + (["mean"] if layer == self.rank_layer else []):
                for anchors, n_pos, means in self.image_maps.get((layer, kind), []):
                    parts.append(
                        _columns(
                            IMAGE_MAPS_SCHEMA,
                            len(anchors),
                            {
                                **key,
                                "layer": layer,
                                "layer_idx": li,
                                "kind": kind,
                                "size": self.size,
                                "image": _names(images, anchors),
                                "n_positives": pa.array(n_pos.astype(np.int32)),
                                "map": encode_maps(means),
                            },
                        )
                    )
        return _concat(IMAGE_MAPS_SCHEMA, parts)

    def rankings_table(self, key: dict, images: Sequence[str]) -> pa.Table:
        """Rows of the rankings table: one per pair of the occlusion source layer, by pair."""
        if self.rank_layer not in self.rankings:
            return RANKINGS_SCHEMA.empty_table()
        a, p = self._pairs(self.rank_layer)
        ranks = np.concatenate(self.rankings[self.rank_layer])
        return _columns(
            RANKINGS_SCHEMA,
            len(a),
            {
                **key,
                "layer": self.rank_layer,
                "size": self.size,
                "anchor": _names(images, a),
                "positive": _names(images, p),
                "pixels": encode_maps(ranks, "i4"),
                "n_relevant": pa.array(np.concatenate(self.relevant[self.rank_layer])),
            },
        )

    def maps_table(self, key: dict, layers: Sequence[str], images: Sequence[str]) -> pa.Table:
        """Rows of the maps table (what ``store_maps`` keeps), by layer, then pair."""
        parts = []
        for li, layer in enumerate(layers):
            if layer not in self.raw:
                continue
            m = np.concatenate(self.raw[layer])
            a, p = self._pairs(layer)
            if self.store_maps == "first_pair":
                a, p = np.array([0]), np.array([1])
            if self.store_maps == "float16":  # scaled to max 1 first: raw LEAM values underflow float16
                scale = m.reshape(len(m), -1).max(1).astype(np.float32)
                scale[scale <= 0] = 1.0
                m = m / scale[:, None, None]
            else:
                scale = np.ones(len(m), np.float32)
            dtype = "f2" if self.store_maps == "float16" else "f4"
            parts.append(
                _columns(
                    MAPS_SCHEMA,
                    len(m),
                    {
                        **key,
                        "layer": layer,
                        "layer_idx": li,
                        "anchor": _names(images, a),
                        "positive": _names(images, p),
                        "height": m.shape[1],
                        "width": m.shape[2],
                        "window": list(self.window),
                        "dtype": dtype,
                        "scale": pa.array(scale),
                        "map": encode_maps(m, dtype),
                    },
                )
            )
        return _concat(MAPS_SCHEMA, parts)


def _names(images: Sequence[str], idx: np.ndarray) -> pa.Array:
    """Image names of the indices ``idx``, as a string column."""
    return pa.array(list(images), pa.string()).take(pa.array(np.asarray(idx, np.int64)))


def _columns(schema: pa.Schema, n: int, values: dict) -> pa.Table:
    """A table of ``n`` rows of ``schema``: pyarrow arrays are taken as they are, anything else is
    one value repeated on every row."""
    cols = []
    for field in schema:
        v = values[field.name]
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            cols.append(v.cast(field.type) if v.type != field.type else v)
        else:
            cols.append(pa.repeat(pa.scalar(v, field.type), n))
    return pa.table(cols, schema=schema)


def _concat(schema: pa.Schema, parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts) if parts else schema.empty_table()
