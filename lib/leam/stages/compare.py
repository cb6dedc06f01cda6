"""Compare stage: are one person's LEAM maps more alike than two people's? (paper RQ3, Tables 3-6)

Per model, layer and image, the image's map is the mean over its positives of its LEAM maps, each
normalised, resized to the aligned frame and reduced to a selection (``top1``: its top 1 % of the
activated pixels, as the paper's Tables 3-6; ``full``: every activated pixel), then divided by its
sum: a 2-D distribution. The extract job computes these image maps while the maps are in memory
(:mod:`leam.core.summaries`); this stage reads them one layer at a time. Pairs compared:

* same identity: every unordered pair of images of one identity (the frames are aligned to the
  identity's reference, so pixels correspond);
* different identity: for every image, ``different_per_image`` images of other identities drawn
  with the seed (frames of different identities share dlib's chip geometry, not a reference).

Measures: Bhattacharyya coefficient on the full frame, and EMD (POT) with the Euclidean ground
distance in frame pixels (:mod:`leam.core.similarity`): exact on a ``grid`` x ``grid`` coarsening
(``compare.emd_grid``, 30 by default: 0.7 % mean and 5.6 % largest error against the exact
full-resolution EMD on the default run's top-1 % maps, ``benchmarks/emd_grid.py``), or with
``grid`` 0 exact at full resolution on the maps' supports (about 90 ms a pair, 30 x more).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from leam.core.baselines import GEOMETRY, landmark_maps, match_support
from leam.core.frames import image_layers, read_image_maps
from leam.core.io import ParquetSink
from leam.core.similarity import bhattacharyya, coarsen, emd_exact, emd_sparse
from leam.core.tables import COMPARE_SCHEMA
from leam.options import CompareOptions

__all__ = [
    "run",
    "compare_model",
    "GEOMETRY",
]

log = logging.getLogger(__name__)


def _pairs(images: Sequence[tuple[str, str]], different_per_image: int, seed: int):
    """Same-identity pairs (every unordered pair) and seeded different-identity draws of sorted
    (identity, image) keys; O(n) per image: an identity's images are one block of the sorted list."""
    same, diff = [], []
    blocks: dict[str, tuple[int, int]] = {}
    for i, (ident, _) in enumerate(images):
        lo, _hi = blocks.get(ident, (i, i))
        blocks[ident] = (lo, i + 1)
    for lo, hi in blocks.values():
        same += [(images[i], images[j]) for i in range(lo, hi) for j in range(i + 1, hi)]
    n = len(images)
    for a in images:
        lo, hi = blocks[a[0]]
        n_others = n - (hi - lo)
        if n_others == 0:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"{a[0]}/{a[1]}".encode())])
        for j in rng.choice(n_others, size=min(different_per_image, n_others), replace=False):
            diff.append((a, images[j if j < lo else j + hi - lo]))  # the j-th image of another identity
    return same, diff


def _skip_reason(a: tuple[str, str], b: tuple[str, str], empty: set) -> str | None:
    """Why the pair (a, b) of (identity, image) keys cannot be compared, or None."""
    gone = [f"{i}/{m}" for i, m in (a, b) if (i, m) in empty]
    return f"all-zero map: {', '.join(gone)}" if gone else None


#: a support above this many pixels makes the exact EMD (``emd_grid: 0``) too slow: such a pair falls
#: back to the 30 x 30 grid (time and memory grow with the square of the support)
SPARSE_LIMIT = 6000


def _emd(p: torch.Tensor, q: torch.Tensor, why: list, grid: int, size: int) -> list[float | None]:
    """EMD of each pair of (B, S, S) distributions, None where skipped: exact on the supports for
    ``grid`` 0 (:func:`leam.core.similarity.emd_sparse`; the 30 grid past :data:`SPARSE_LIMIT` pixels),
    else exact on a ``grid`` x ``grid`` coarsening."""
    out: list[float | None] = []
    if grid == 0:
        pn, qn = p.numpy(), q.numpy()
        for x, y, w in zip(pn, qn, why, strict=True):
            if w:
                out.append(None)
            elif max(np.count_nonzero(x), np.count_nonzero(y)) <= SPARSE_LIMIT:
                out.append(emd_sparse(x, y))
            else:
                out.append(
                    emd_exact(
                        coarsen(torch.from_numpy(x)[None], 30)[0].numpy(),
                        coarsen(torch.from_numpy(y)[None], 30)[0].numpy(),
                        size,
                    )
                )
        return out
    pc, qc = coarsen(p, grid).numpy(), coarsen(q, grid).numpy()
    return [None if w else emd_exact(x, y, size) for x, y, w in zip(pc, qc, why, strict=True)]


def _compare_layer(sink, images, maps, *, layer, li, selection, options: CompareOptions):
    """Compare rows of one layer and selection: (n, S, S) ``maps`` of sorted ``images`` keys."""
    model, size, grid, batch = options.model, options.size, options.grid, options.batch
    index = {k: i for i, k in enumerate(images)}
    empty = {images[i] for i in np.flatnonzero(maps.reshape(len(maps), -1).max(1) <= 0)}
    if empty:
        log.warning(
            "%s %s %s: %d of %d images have an all-zero map (no pixel selected): their pairs are recorded as skipped",
            model,
            layer,
            selection,
            len(empty),
            len(images),
        )
    same, diff = _pairs(images, options.different_per_image, options.seed)
    for kind, pairs in (("same", same), ("different", diff)):
        for b0 in range(0, len(pairs), batch):
            part = pairs[b0 : b0 + batch]
            p = torch.from_numpy(maps[[index[a] for a, _ in part]]).double()
            q = torch.from_numpy(maps[[index[b] for _, b in part]]).double()
            why = [_skip_reason(a, b, empty) for a, b in part]
            bc = bhattacharyya(p, q).tolist()
            emd = _emd(p, q, why, grid, size)
            sink.add(
                [
                    {
                        "model": model,
                        "layer": layer,
                        "layer_idx": li,
                        "selection": selection,
                        "kind": kind,
                        "identity_a": a[0],
                        "image_a": a[1],
                        "identity_b": b[0],
                        "image_b": b[1],
                        "bc": None if w else float(bc_i),
                        "emd": e,
                        "skipped": w,
                    }
                    for (a, b), bc_i, e, w in zip(part, bc, emd, why, strict=True)
                ]
            )
    log.info("%s %s %s: %d same-identity, %d different-identity pairs", model, layer, selection, len(same), len(diff))


def run(*, inputs, outputs, options: CompareOptions) -> int:
    """The workflow's entry point (rule ``compare``): ``inputs.image_maps`` (the model's, every
    shard) and ``inputs.aligned`` (every shard) in, ``outputs.compare`` out."""
    return compare_model(inputs.image_maps, outputs.compare, options=options, aligned_paths=inputs.aligned)


def compare_model(image_maps_paths, out_path: str, *, options: CompareOptions, aligned_paths=()) -> int:
    """Compare stage for one model: BC and EMD of same- and different-identity image maps.

    ``image_maps_paths``: the model's image-maps files (every shard; :mod:`leam.core.summaries`). One
    layer and selection is in memory at a time (n images x S x S float32) and pairs are compared
    ``options.batch`` at a time. ``aligned_paths``: the align stage's files; when given, the same
    pairs are also compared on model-free landmark maps exactly as sparse as each LEAM map
    (:func:`leam.core.baselines.landmark_maps`, :func:`leam.core.baselines.match_support`), rows with
    selection ``geometry:<selection>``: the geometry baseline of the BC/EMD finding.
    Returns the number of rows written.
    """
    model, size = options.model, options.size
    layers = image_layers(image_maps_paths)
    free: tuple[list, np.ndarray] | None = None  # (images, landmark maps), made once
    with ParquetSink(out_path, COMPARE_SCHEMA, row_group_size=65536) as sink:
        for selection in options.selections:
            for li, layer in layers:
                images, maps = read_image_maps(image_maps_paths, layer, selection)
                if not images:
                    log.warning(
                        "%s %s: no %s image maps (was extract run with this selection?)", model, layer, selection
                    )
                    continue
                _compare_layer(sink, images, maps, layer=layer, li=li, selection=selection, options=options)
                if aligned_paths:
                    if free is None or free[0] != images:
                        free = (images, landmark_maps(aligned_paths, images, size))
                    geo = match_support(free[1], maps)
                    _compare_layer(
                        sink, images, geo, layer=layer, li=li, selection=GEOMETRY + selection, options=options
                    )
    return sink.rows
