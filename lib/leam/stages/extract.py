"""Extract stage: LEAM maps of one model and one shard, and everything later stages need of them.

Outputs (one Parquet file each, written row group by row group: memory stays at one identity):

* pairs: (model, identity, anchor, positive) -> cosine similarity, every ordered same-identity pair;
* embeddings: (model, identity, image) -> embedding (float32 list), for different-identity cosines;
* counts: per pair, layer and relevance selection, pixels per parser class (:mod:`leam.core.counting`);
* image maps and rankings: per-image distributions (compare), own maps and pixel rankings at the
  occlusion source layer (:mod:`leam.core.summaries`);
* maps: (model, layer, identity, anchor, positive) -> raw LEAM map at layer resolution,
  ``height`` x ``width`` little-endian floats of ``dtype`` (:mod:`leam.core.maps`), covering ``window``
  (x0, y0, x1, y1) of the aligned frame (:mod:`leam.core.window`); every pair, or each identity's first
  pair (``store_maps``, :data:`leam.core.summaries.STORE_MAPS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import pyarrow as pa
import pyarrow.compute as pc
import torch

from leam.cam import LEAM
from leam.core.classes import visible_classes
from leam.core.device import pick_device
from leam.core.frames import identity_inputs, prefetch
from leam.core.io import ParquetSink, iter_parquet
from leam.core.summaries import IdentitySummaries
from leam.core.tables import (
    COUNTS_SCHEMA,
    EMBEDDINGS_SCHEMA,
    IMAGE_MAPS_SCHEMA,
    MAPS_SCHEMA,
    PAIRS_SCHEMA,
    RANKINGS_SCHEMA,
)
from leam.models.loader import FaceModel, load_model
from leam.options import ExtractOptions

__all__ = ["run", "extract_shard", "OUTPUTS"]

log = logging.getLogger(__name__)


#: the six files of an extract job
OUTPUTS = ("pairs", "embeddings", "counts", "image_maps", "rankings", "maps")


def run(*, inputs, outputs, options: ExtractOptions, threads: int | None = None) -> None:
    """The workflow's entry point (rule ``extract``): ``inputs.aligned``, ``inputs.labels`` in;
    ``outputs.pairs``, ``.embeddings``, ``.counts``, ``.image_maps``, ``.rankings``, ``.maps`` out."""
    extract_shard(
        inputs.aligned,
        inputs.labels,
        out={name: getattr(outputs, name) for name in OUTPUTS},
        options=options,
        threads=threads,
    )


def extract_shard(
    aligned,
    labels,
    *,
    out: dict[str, str],
    options: ExtractOptions,
    threads: int | None = None,
    base_dir: str | os.PathLike = ".",
) -> None:
    """Run LEAM over every identity of a shard; write pairs, embeddings, counts, image maps,
    rankings and maps (``out``: {name: path} for the names of :data:`OUTPUTS`).

    ``aligned``, ``labels``: the shard's aligned-frames and parser-labels Parquet paths, read one
    identity at a time; ``options``: the model, its layers, and what to count and keep
    (:class:`leam.options.ExtractOptions`); ``threads``: torch's CPU threads (None: torch's choice);
    ``base_dir``: what relative weight paths are relative to.
    """
    o = options
    model_name, rank_layer = o.model, o.rank_layer
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(o.device)
    model: FaceModel = load_model(model_name, o.spec, base_dir=base_dir, device=dev, frame_padding=o.frame_padding)
    layer_names = list(model.layers)
    if rank_layer is not None and rank_layer not in model.layers:
        raise ValueError(f"occlusion source layer {rank_layer!r} is not a layer of {model_name}")
    n_maps = 0
    t0 = time.perf_counter()
    ids = pa.chunked_array([b.column(0) for b in iter_parquet(aligned, columns=["identity"])], pa.string())
    n_identities = len(pc.unique(ids))
    sinks = {
        name: ParquetSink(out[name], schema, row_group_size=rg)
        for name, schema, rg in (
            ("pairs", PAIRS_SCHEMA, 65536),
            ("embeddings", EMBEDDINGS_SCHEMA, 65536),
            ("counts", COUNTS_SCHEMA, 65536),
            ("image_maps", IMAGE_MAPS_SCHEMA, 256),
            ("rankings", RANKINGS_SCHEMA, 4096),
            ("maps", MAPS_SCHEMA, 4096),
        )
    }
    with contextlib.ExitStack() as stack, LEAM(model.module, model.layers, memory_budget_mb=o.memory_budget_mb) as leam:
        for sink in sinks.values():
            stack.enter_context(sink)
        for i, (identity, images, frames, lab_np, parser) in enumerate(prefetch(identity_inputs(aligned, labels)), 1):
            window = model.window(frames.shape[1])
            summ = IdentitySummaries(
                torch.from_numpy(lab_np).to(dev),
                window,
                levels=o.levels,
                full_threshold=o.full_threshold,
                topk_of=o.topk_of,
                selections=o.selections,
                rank_layer=rank_layer,
                k_max=o.rank_pixels if rank_layer is not None else 0,
                store_maps=o.store_maps,
            )
            out_maps = leam.explain(model.preprocess(torch.from_numpy(frames)), keep_maps=False, consumer=summ)
            key = {"model": model_name, "identity": identity}
            emb = out_maps.embeddings.float().cpu().numpy()
            sinks["embeddings"].add([{**key, "image": im, "embedding": emb[j].tolist()} for j, im in enumerate(images)])
            cos = out_maps.cosine.double().cpu().numpy()
            a_idx, p_idx = out_maps.anchor.tolist(), out_maps.positive.tolist()
            sinks["pairs"].add(
                [
                    {**key, "anchor": images[a], "positive": images[p], "cosine": float(cos[a, p])}
                    for a, p in zip(a_idx, p_idx, strict=True)
                ]
            )
            for t in summ.counts_rows(key, layer_names, images, parser=parser, visible=set(visible_classes(parser))):
                sinks["counts"].add(t)
            sinks["image_maps"].add(summ.image_maps_table(key, layer_names, images))
            sinks["rankings"].add(summ.rankings_table(key, images))
            sinks["maps"].add(summ.maps_table(key, layer_names, images))
            n_maps += len(a_idx) * len(layer_names)
            log.info(
                "[%d/%d] %s: %d images, %d pairs x %d layers (%.1f maps/s so far)",
                i,
                n_identities,
                identity,
                len(images),
                len(a_idx),
                len(layer_names),
                n_maps / max(time.perf_counter() - t0, 1e-9),
            )
    log.info(
        "extract %s: %d maps on %s in %.1f s (%d raw maps stored: %s)",
        model_name,
        n_maps,
        dev,
        time.perf_counter() - t0,
        sinks["maps"].rows,
        o.store_maps,
    )
