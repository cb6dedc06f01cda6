"""Occlude stage: do LEAM's pixels matter? Black-pixel occlusion, LEAM-guided vs random (paper RQ6).

For every ordered same-identity pair (anchor a, positive p) -- or ``positives_per_anchor`` of an
anchor's positives, seeded -- and every size k (% of the frame's pixels: 0.01 0.05 0.1 0.25 0.5
0.75 1 1.25 1.5 2 5 10 by default), ``ceil(k / 100 * S * S)`` pixels of the anchor's aligned
frame are set to black:

* ``leam``: the highest pixels of a source model's LEAM map of (a, p) at its source layer
  (normalised and resized to the frame; ties by pixel index), for each source model;
* ``random``: as many pixels drawn uniformly without replacement among the pixels the target
  model sees (its window of the frame: the whole frame for ``chip`` models), seeded by
  (seed, identity, anchor, size), so a rerun draws the same pixels. One draw per anchor, size and
  window serves all of the anchor's positives and every source (a random mask depends on neither).

Each target model (every configured model: transfer) embeds the occluded anchor and the intact
positive; the drop is cos(f(a), f(p)) - cos(f(a_occluded), f(p)). The paper took one source
(IR_CASIA's first convolution); several sources give the whole source x target transfer table.

The identity atlas (beyond the paper): for each image h held out of its identity, four maps pick
the pixels to occlude in h: its ``own`` map (mean of its LEAM maps over its positives), the
``identity`` atlas (mean of the own maps of the identity's other images; frames share the
identity's reference), the ``population`` atlas (mean of the own maps of every image of other
identities) and ``random``; the drop is averaged over h's positives.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from leam.core.device import pick_device
from leam.core.frames import iter_identities, sorted_groups
from leam.core.io import ParquetSink, iter_parquet, read_parquet, write_parquet
from leam.core.maps import decode_maps, top_indices, top_mask
from leam.core.selection import n_occluded
from leam.core.tables import ATLAS_SCHEMA, OCCLUSION_SCHEMA, POPULATION_SCHEMA
from leam.models.loader import FaceModel, load_model
from leam.options import OccludeOptions, PopulationOptions

__all__ = [
    "n_occluded",
    "top_mask",
    "random_mask",
    "window_pixels",
    "choose_pairs",
    "occlude_pairs",
    "atlas_occlusion",
    "iter_rankings",
    "iter_own_maps",
    "read_rankings",
    "read_own_maps",
    "population_sum",
    "write_population",
    "read_population",
    "occlude_stage",
    "run",
    "run_population",
]

log = logging.getLogger(__name__)


def window_pixels(shape: tuple[int, int], window: tuple[int, int, int, int] | None) -> np.ndarray:
    """Row-major indices of the (S, S) frame's pixels inside ``window`` (x0, y0, x1, y1), clipped
    to the frame; every pixel for None (a whole-frame window gives ``arange(S * S)``)."""
    h, w = shape
    if window is None:
        return np.arange(h * w)
    x0, y0, x1, y1 = window
    ys, xs = np.arange(max(0, y0), min(h, y1)), np.arange(max(0, x0), min(w, x1))
    return (ys[:, None] * w + xs[None, :]).ravel()


def random_mask(
    shape: tuple[int, int], k: int, key: Sequence, window: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """(S, S) bool with exactly k True pixels, drawn uniformly without replacement among the pixels
    of ``window`` (a target model's view of the frame: :meth:`leam.models.loader.FaceModel.window`; None,
    or a whole-frame window: every pixel), seeded by ``key``: the same key and window draw the same
    pixels, and a whole-frame window draws what an unwindowed mask did.

    ``key``: (seed, names...); numbers after the seed are keyed by their value (1 and 1.0 alike).
    """

    def part(v):
        return f"{float(v):.12g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)

    seed = [int(key[0])] + [zlib.crc32(part(v).encode()) for v in key[1:]]
    pool = window_pixels(shape, window)
    if k > len(pool):
        raise ValueError(f"cannot draw {k} pixels from a window of {len(pool)}")
    idx = pool[np.random.default_rng(seed).choice(len(pool), size=k, replace=False)]
    m = np.zeros(shape[0] * shape[1], bool)
    m[idx] = True
    return torch.from_numpy(m.reshape(shape))


def choose_pairs(
    pairs: Sequence[tuple[str, str]], positives_per_anchor: int | None, *, seed: int, identity: str
) -> list[tuple[str, str]]:
    """The ordered pairs to occlude: all of them, or ``positives_per_anchor`` positives per anchor
    drawn without replacement, seeded by (seed, identity, anchor). Sorted."""
    if positives_per_anchor is None:
        return sorted(pairs)
    by_anchor: dict[str, list[str]] = {}
    for a, p in sorted(pairs):
        by_anchor.setdefault(a, []).append(p)
    out = []
    for a, ps in by_anchor.items():
        if len(ps) > positives_per_anchor:
            rng = np.random.default_rng([seed, zlib.crc32(identity.encode()), zlib.crc32(a.encode())])
            ps = sorted(ps[i] for i in rng.choice(len(ps), positives_per_anchor, replace=False))
        out += [(a, p) for p in ps]
    return out


def occlude_pairs(
    frames: dict[str, np.ndarray],
    sources: dict[tuple[str, str], dict[tuple[str, str], torch.Tensor]],
    targets: dict[str, FaceModel],
    *,
    identity: str,
    sizes: Sequence[float],
    seed: int,
    positives_per_anchor: int | None,
) -> list[dict]:
    """Occlusion rows for one identity: every source's LEAM pixels and random pixels, every target.

    frames: {image: (S, S, 3) uint8}; sources: {(source model, source layer): {(anchor, positive):
    ranking}}, a ranking being the pair's (K,) top pixel indices in rank order (extract's rankings,
    K >= the largest size's pixel count) or its (S, S) normalised frame map. The pairs are those
    every source has (:func:`choose_pairs` of them).
    Random pixels are drawn inside each target's window (:meth:`leam.models.loader.FaceModel.window`):
    pixels a target never sees would make random occlusion look weaker than it is. A draw depends
    on (anchor, size, window), not on the source: it is embedded once per target and its row is
    repeated under every source, so each (source, target) cell has its random baseline on the same
    pairs (cells are analysed one by one, never pooled over sources).
    """
    common = set.intersection(*(set(m) for m in sources.values())) if sources else set()
    pairs = choose_pairs(sorted(common), positives_per_anchor, seed=seed, identity=identity)
    if not pairs:
        return []
    s = next(iter(frames.values())).shape[0]
    images = sorted(frames)
    intact = torch.from_numpy(np.stack([frames[i] for i in images]))
    anchors = sorted({a for a, _ in pairs})
    k_max = max(n_occluded(size, s * s) for size in sizes)
    windows = {name: model.window(s) for name, model in targets.items()}
    # (P, K) rankings, -1 past a map's relevant pixels
    ranks = {src: torch.stack([_ranking(maps[p], k_max) for p in pairs]) for src, maps in sources.items()}
    occluded: list[torch.Tensor] = []
    # (source, anchor, positive, method, size, k, index of the LEAM-occluded frame or None, skipped)
    meta: list[tuple] = []
    rand: dict[tuple, int] = {}  # (window, anchor, size) -> index of the randomly occluded frame

    def occlude(a: str, mask: torch.Tensor) -> int:
        f = torch.from_numpy(frames[a].copy())
        f[mask] = 0
        occluded.append(f)
        return len(occluded) - 1

    for size in sizes:
        k = n_occluded(size, s * s)
        for w in sorted(set(windows.values())):
            for a in anchors:
                rand[(w, a, size)] = occlude(a, random_mask((s, s), k, (seed, identity, a, size), w))
        for src, rank in ranks.items():
            for j, (a, p) in enumerate(pairs):
                top = rank[j, :k]
                if bool((top < 0).any()):  # fewer relevant pixels than k: no LEAM mask, and no paired random one
                    why = f"the LEAM map has {int((rank[j] >= 0).sum())} pixels above 0, fewer than the {k} to occlude"
                    meta += [(src, a, p, "leam", size, k, None, why), (src, a, p, "random", size, k, None, why)]
                    continue
                mask = torch.zeros(s * s, dtype=torch.bool)
                mask[top] = True
                meta.append((src, a, p, "leam", size, k, occlude(a, mask.reshape(s, s)), None))
                meta.append((src, a, p, "random", size, k, None, None))
    occ = torch.stack(occluded)
    rows = []
    for name, model in targets.items():
        # the frames this target sees: every LEAM occlusion and the random draws inside its window
        which = [
            0 if why else (i if method == "leam" else rand[(windows[name], a, size)])
            for _, a, _, method, size, _, i, why in meta
        ]
        rows += _target_rows(
            name, model, images=images, intact=intact, pairs=pairs, occ=occ, which=which, meta=meta, identity=identity
        )
    return rows


def _target_rows(
    name: str,
    model: FaceModel,
    *,
    images: list[str],
    intact: torch.Tensor,
    pairs: list[tuple[str, str]],
    occ: torch.Tensor,
    which: list[int],
    meta: list[tuple],
    identity: str,
) -> list[dict]:
    """One target model's occlusion rows: ``meta`` (source, anchor, positive, method, size, k, _,
    skipped) each with the index in ``occ`` (the occluded anchor frames) of the frame it embeds;
    ``intact``: the (n, S, S, 3) unoccluded frames of ``images``; ``pairs``: the (anchor, positive)
    pairs of ``meta``."""
    needed = sorted(set(which))
    slot = {j: n for n, j in enumerate(needed)}
    unit = dict(zip(images, model.embed(intact), strict=True))
    before = {(a, p): float((unit[a] * unit[p]).sum()) for a, p in pairs}
    u_occ = model.embed(occ[needed])  # (M, D)
    after = (u_occ[[slot[j] for j in which]] * torch.stack([unit[m[2]] for m in meta])).sum(-1).tolist()
    rows = []
    for ((src_model, src_layer), a, p, method, size, k, _, why), c in zip(meta, after, strict=True):
        cosine_after = None if why else c
        rows.append(
            {
                "source_model": src_model,
                "source_layer": src_layer,
                "model": name,
                "identity": identity,
                "anchor": a,
                "positive": p,
                "method": method,
                "size_pct": float(size),
                "n_occluded": k,
                "cosine_before": before[(a, p)],
                "cosine_after": cosine_after,
                "drop": None if cosine_after is None else before[(a, p)] - cosine_after,
                "skipped": why,
            }
        )
    return rows


def _ranking(v: torch.Tensor, k: int) -> torch.Tensor:
    """A pair's ranking (1-D pixel indices, -1 past its relevant pixels: :func:`read_rankings`) or
    (S, S) map -> its first k pixel indices, -1 where the map is not above 0."""
    if v.dim() == 1:
        if len(v) < k:
            raise ValueError(
                f"a stored ranking has {len(v)} pixels, fewer than the {k} of the largest occlusion "
                "size: rerun extract (occlude.sizes changed)"
            )
        return v[:k].long()
    flat = v.reshape(-1)
    top = top_indices(flat[None], k)[0]
    return torch.where(flat[top] > 0, top, -1)


def _atlas_masks(candidates: dict[str, torch.Tensor | None], k: int, *, skipped: list[tuple], tag: float) -> dict:
    """{atlas name: (S, S) mask of its top k pixels} of the atlases that exist; one with fewer than
    k pixels above 0 (all-zero or sparse: no pixels to pick by value) is appended to ``skipped`` as
    (name, ``tag`` (the size), k, why) instead."""
    masks: dict = {}
    for name, m in candidates.items():
        if m is None:
            continue
        if (n_rel := int((m > 0).sum())) < k:
            skipped.append((name, tag, k, f"the {name} map has {n_rel} pixels above 0, fewer than the {k} to occlude"))
            continue
        masks[name] = top_mask(m[None], k)[0]
    return masks


def atlas_occlusion(
    frames: dict[str, dict[str, np.ndarray]],
    own: dict[str, dict[str, torch.Tensor]],
    targets: dict[str, FaceModel],
    *,
    population_sum: torch.Tensor | None = None,
    population_count: int = 0,
    sizes: Sequence[float],
    seed: int,
) -> list[dict]:
    """Leave-one-image-out occlusion with own / identity / population atlases and random pixels.

    frames: {identity: {image: frame}}; own: {identity: {image: own map}} (identities with >= 2
    images). ``population_sum`` / ``population_count``: sum and number of own maps over *all*
    identities of the run (every shard); an identity's population atlas leaves its own maps out.
    Default: the identities given here. A method whose atlas would be empty (no other image of the
    identity, no other identity) is left out, not faked.
    """
    if population_sum is None:
        maps = [m for d in own.values() for m in d.values()]
        population_sum = torch.stack(maps).sum(0) if maps else None
        population_count = len(maps)
    rows = []
    for identity in sorted(own):
        imgs = sorted(own[identity])
        mine = torch.stack([own[identity][i] for i in imgs])
        n_pop = population_count - len(imgs)
        population = (population_sum - mine.sum(0)) / n_pop if n_pop > 0 and population_sum is not None else None
        for h in imgs:
            rest = [own[identity][i] for i in imgs if i != h]
            candidates = {
                "own": own[identity][h],
                "identity": torch.stack(rest).mean(0) if rest else None,
                "population": population,
            }
            positives = [p for p in imgs if p != h]
            s = frames[identity][h].shape[0]
            windows = {name: model.window(s) for name, model in targets.items()}
            occluded: list[torch.Tensor] = []
            meta: list[tuple] = []
            skipped: list[tuple] = []
            for size in sizes:
                k = n_occluded(size, s * s)
                masks = _atlas_masks(candidates, k, skipped=skipped, tag=size)
                for w in sorted(set(windows.values())):  # random pixels inside each target's window
                    masks[("random", w)] = random_mask((s, s), k, (seed, identity, h, "atlas", size), w)
                for method, mask in masks.items():
                    f = torch.from_numpy(frames[identity][h].copy())
                    f[mask] = 0
                    occluded.append(f)
                    meta.append((method, size, k))
            occ = torch.stack(occluded)
            for name, model in targets.items():
                ids = [h] + positives
                unit = model.embed(torch.from_numpy(np.stack([frames[identity][i] for i in ids])))
                u_h, u_pos = unit[0], unit[1:]  # (D,), (n - 1, D)
                before = (u_pos @ u_h).mean()
                seen = [j for j, (m, _, _) in enumerate(meta) if not isinstance(m, tuple) or m[1] == windows[name]]
                u_occ = model.embed(occ[seen])  # (M, D): the occlusions this target sees
                after = (u_occ @ u_pos.T).mean(1)  # (M,)
                measured = [
                    (
                        meta[j][0] if isinstance(meta[j][0], str) else "random",
                        meta[j][1],
                        meta[j][2],
                        float(before) - c,
                        None,
                    )
                    for j, c in zip(seen, after.tolist(), strict=True)
                ]
                unmeasured = [(method, size, k, None, why) for method, size, k, why in skipped]
                for method, size, k, drop, why in measured + unmeasured:
                    rows.append(
                        {
                            "model": name,
                            "identity": identity,
                            "image": h,
                            "method": method,
                            "size_pct": float(size),
                            "n_occluded": k,
                            "n_positives": len(positives),
                            "drop": drop,
                            "skipped": why,
                        }
                    )
    return rows


def iter_rankings(path, layer: str) -> Iterator[tuple[str, dict[tuple[str, str], torch.Tensor]]]:
    """(identity, {(anchor, positive): (K,) ranked pixel indices}) of one layer of a rankings file,
    one identity at a time in the file's order (extract writes it sorted by identity, anchor,
    positive; another order is an error naming the file); -1 past each map's relevant pixels
    (``n_relevant``)."""
    columns = ["identity", "anchor", "positive", "pixels", "n_relevant"]
    batches = iter_parquet(path, columns=columns, filters=[("layer", "=", layer)], batch_size=256)
    for identity, rows in sorted_groups(batches, path, columns, key=("identity", "anchor", "positive")):
        out = {}
        for r in rows:
            px = torch.from_numpy(np.frombuffer(r["pixels"], "<i4").astype(np.int64))
            px[r["n_relevant"] :] = -1  # ranks past the relevant pixels are ties at 0: no LEAM pixels
            out[(r["anchor"], r["positive"])] = px
        yield identity, out


def iter_own_maps(path, layer: str) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(identity, {image: (S, S) own map}): the ``mean`` image maps of one layer
    (:mod:`leam.core.summaries`), one identity at a time in the file's order."""
    columns = ["identity", "image", "size", "map"]
    batches = iter_parquet(
        path, columns=columns, filters=[("layer", "=", layer), ("kind", "=", "mean")], batch_size=256
    )
    for identity, rows in sorted_groups(batches, path, columns):
        size = rows[0]["size"]
        maps = decode_maps(pa.array([r["map"] for r in rows], pa.binary()), size, size)
        yield identity, {r["image"]: torch.from_numpy(m.copy()) for r, m in zip(rows, maps, strict=True)}


def read_rankings(path, layer: str) -> dict[str, dict[tuple[str, str], torch.Tensor]]:
    """{identity: {(anchor, positive): ranked pixels}} of a whole file (:func:`iter_rankings`)."""
    return dict(iter_rankings(path, layer))


def read_own_maps(path, layer: str) -> dict[str, dict[str, torch.Tensor]]:
    """{identity: {image: own map}} of a whole file (:func:`iter_own_maps`)."""
    return dict(iter_own_maps(path, layer))


class _InOrder:
    """The values of (identity, value) pairs that come in the aligned order, asked for in that same
    order: what the frames loop needs, one identity's value in memory at a time."""

    def __init__(self, pairs: Iterator[tuple[str, object]]):
        self._pairs = pairs
        self._head = next(pairs, None)

    def pop(self, identity: str, default):
        while self._head is not None and self._head[0] < identity:  # an identity without frames
            self._head = next(self._pairs, None)
        if self._head is None or self._head[0] != identity:
            return default
        value = self._head[1]
        self._head = next(self._pairs, None)
        return value


def population_sum(image_maps_paths, layer: str, size: int) -> tuple[np.ndarray, int]:
    """Sum (float64) and number of the own maps of every image in the image-maps files, a batch at a time."""
    total, count = np.zeros((size, size)), 0
    for batch in iter_parquet(
        image_maps_paths, columns=["size", "map"], filters=[("layer", "=", layer), ("kind", "=", "mean")]
    ):
        sizes = set(batch.column("size").to_pylist())
        if sizes - {size}:
            raise ValueError(f"own maps of {sorted(sizes - {size})} px in a {size} px run")
        maps = decode_maps(batch.column("map"), size, size)
        for m in maps:  # one by one, in file order: the same float64 sum as before
            total += m
        count += len(maps)
    return total, count


def run(*, inputs, outputs, options: OccludeOptions, threads: int | None = None) -> None:
    """The workflow's entry point (rule ``occlude``), one target model and shard. In:
    ``inputs.aligned`` (the shard's frames), ``inputs.rankings`` (the shard's rankings file of each
    of ``options.sources``, in that order), ``inputs.own_maps`` (the first source's image-maps file
    of the shard: one path, or a one-path list), ``inputs.population`` (:func:`write_population`).
    Out: ``outputs.occlusion``, ``outputs.atlas``. ``threads``: torch's CPU threads."""
    if threads:
        torch.set_num_threads(int(threads))
    own = inputs.own_maps if isinstance(inputs.own_maps, str) else inputs.own_maps[0]
    occlude_stage(
        inputs.aligned,
        list(inputs.rankings),
        occlusion_out=outputs.occlusion,
        atlas_out=outputs.atlas,
        own_maps_path=own,
        population=read_population(inputs.population),
        options=options,
    )


def occlude_stage(
    aligned,
    rankings_paths: Sequence[str],
    *,
    occlusion_out: str,
    atlas_out: str,
    options: OccludeOptions,
    own_maps_path=None,
    population: tuple[np.ndarray, int] | None = None,
) -> None:
    """Occlude stage for one shard: source rankings + frames in, occlusion and atlas tables out.

    ``aligned``: the shard's aligned frames (path or table); ``rankings_paths``: the rankings file of
    this shard of each of ``options.sources`` (source model, source layer), the first source being
    the atlas's, whose own maps are read from ``own_maps_path`` (its image-maps file of this shard);
    ``options.model``: the target model; ``population``: (sum, count) of the first source's own
    maps over the whole run (:func:`population_sum`); ``options.positives_per_anchor``: see
    :func:`choose_pairs` (None: every pair, as the paper); ``options.atlas_sizes``: the atlas's
    sizes (None: ``options.sizes``).
    One identity's frames, rankings, own maps and result rows are in memory at a time.
    """
    o = options
    sizes, seed = o.sizes, o.seed
    sources = [(m, layer, path) for (m, layer), path in zip(o.sources, rankings_paths, strict=True)]
    dev = pick_device(o.device)
    targets = {o.model: load_model(o.model, o.spec, device=dev, frame_padding=o.frame_padding)}
    rankings = {(m, layer): _InOrder(iter_rankings(path, layer)) for m, layer, path in sources}
    own = _InOrder(iter_own_maps(own_maps_path, sources[0][1]) if sources and own_maps_path is not None else iter(()))
    pop_sum, pop_n = (torch.from_numpy(population[0]).float(), population[1]) if population else (None, 0)
    n_ident = len(
        set().union(
            *(
                pq.read_table(path, columns=["identity"], filters=[("layer", "=", layer)])
                .column("identity")
                .to_pylist()
                for _, layer, path in sources
            )
        )
    )
    i = 0
    with ParquetSink(occlusion_out, OCCLUSION_SCHEMA) as occ_sink, ParquetSink(atlas_out, ATLAS_SCHEMA) as atlas_sink:
        for identity, images, f in iter_identities(aligned):
            frames = dict(zip(images, f, strict=True))
            maps = {src: lookup.pop(identity, None) for src, lookup in rankings.items()}
            if any(m is not None for m in maps.values()):
                i += 1
                part = occlude_pairs(
                    frames,
                    {src: m or {} for src, m in maps.items()},
                    targets,
                    identity=identity,
                    sizes=sizes,
                    seed=seed,
                    positives_per_anchor=o.positives_per_anchor,
                )
                occ_sink.add(part)
                log.info(
                    "[%d/%d] occluded %s: %d pairs x %d sizes x (%d sources + random) x %d models",
                    i,
                    n_ident,
                    identity,
                    len({(r["anchor"], r["positive"]) for r in part}),
                    len(sizes),
                    len(rankings),
                    len(targets),
                )
            own_maps = own.pop(identity, None)
            if own_maps is not None:
                part = atlas_occlusion(
                    {identity: frames},
                    {identity: own_maps},
                    targets,
                    population_sum=pop_sum,
                    population_count=pop_n,
                    sizes=sizes if o.atlas_sizes is None else o.atlas_sizes,
                    seed=seed,
                )
                for r in part:
                    r.update(source_model=sources[0][0], source_layer=sources[0][1])
                atlas_sink.add(part)
    log.info("occlusion: %d rows; atlas: %d rows", occ_sink.rows, atlas_sink.rows)


def run_population(*, inputs, outputs, options: PopulationOptions) -> None:
    """The workflow's entry point of rule ``population_atlas``: ``inputs.image_maps`` (the first
    occlusion source's, every shard) in, ``outputs.population`` out."""
    write_population(inputs.image_maps, options.layer, options.size, outputs.population)


def write_population(image_maps_paths, layer: str, size: int, out_path: str) -> None:
    """Population atlas input: the sum and number of own maps over every shard, one row."""
    total, count = population_sum(image_maps_paths, layer, size)
    write_parquet(
        pa.Table.from_pylist(
            [{"layer": layer, "size": size, "count": count, "sum": total.ravel().tolist()}], schema=POPULATION_SCHEMA
        ),
        out_path,
    )
    log.info("population atlas of %s: %d own maps", layer, count)


def read_population(path: str) -> tuple[np.ndarray, int]:
    r = read_parquet(path).to_pylist()[0]
    return np.asarray(r["sum"]).reshape(r["size"], r["size"]), r["count"]
