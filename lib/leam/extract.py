"""Extract stage: LEAM maps, pair cosines and embeddings for one model and one shard.

Outputs (one row per ...):

* maps: (model, layer, identity, anchor, positive) -> raw LEAM map at layer resolution,
  ``height`` x ``width`` float32 little-endian bytes (not normalised: :mod:`leam.maps` does that),
  covering ``window`` (x0, y0, x1, y1) of the aligned frame (:mod:`leam.window`);
* pairs: (model, identity, anchor, positive) -> cosine similarity, every ordered same-identity pair;
* embeddings: (model, identity, image) -> embedding (float32 list), for different-identity cosines.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from .align import decode_png
from .cam import LEAM
from .io import write_parquet
from .models import FaceModel, load_model

__all__ = ["pick_device", "prefetch", "iter_identities", "extract_shard", "MAPS_SCHEMA", "PAIRS_SCHEMA", "EMBEDDINGS_SCHEMA"]

log = logging.getLogger(__name__)

MAPS_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("layer", pa.string()),
    ("layer_idx", pa.int16()),
    ("identity", pa.string()),
    ("anchor", pa.string()),
    ("positive", pa.string()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("window", pa.list_(pa.int32(), 4)),
    ("map", pa.binary()),
])

PAIRS_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("identity", pa.string()),
    ("anchor", pa.string()),
    ("positive", pa.string()),
    ("cosine", pa.float64()),
])

EMBEDDINGS_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("identity", pa.string()),
    ("image", pa.string()),
    ("embedding", pa.list_(pa.float32())),
])


def prefetch(iterable, depth: int = 2):
    """Yield from ``iterable`` while a background thread produces the next ``depth`` items
    (decoding the next identity's frames overlaps the current identity's extraction)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for item in iterable:
                q.put(item)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def iter_identities(aligned: pa.Table) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """(identity, sorted image names, (n, S, S, 3) uint8 frames) for each identity, sorted."""
    rows = sorted(aligned.to_pylist(), key=lambda r: (r["identity"], r["image"]))
    ident: dict[str, list[dict]] = {}
    for r in rows:
        ident.setdefault(r["identity"], []).append(r)
    for name, rs in ident.items():
        yield name, [r["image"] for r in rs], np.stack([decode_png(r["frame_png"]) for r in rs])


def extract_shard(aligned: pa.Table, model_name: str, model_spec: dict, *, maps_out: str, pairs_out: str,
                  embeddings_out: str, device: str = "auto", memory_budget_mb: float = 2048,
                  threads: int | None = None, base_dir: str | os.PathLike = ".", frame_padding: float = 0.25) -> None:
    """Run LEAM over every identity of a shard and write maps, pairs and embeddings.

    ``frame_padding``: ``align.padding`` of the aligned frames (places the model's window).
    """
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device)
    model: FaceModel = load_model(model_name, model_spec, base_dir=base_dir, device=dev, frame_padding=frame_padding)
    layer_names = list(model.layers)
    maps_rows: list[dict] = []
    pairs_rows: list[dict] = []
    emb_rows: list[dict] = []
    t0 = time.perf_counter()
    n_identities = len(set(aligned.column("identity").to_pylist()))
    with LEAM(model.module, model.layers, memory_budget_mb=memory_budget_mb) as leam:
        for i, (identity, images, frames) in enumerate(prefetch(iter_identities(aligned)), 1):
            out = leam.explain(model.preprocess(torch.from_numpy(frames)))
            key = {"model": model_name, "identity": identity}
            window = list(model.window(frames.shape[1]))
            emb = out.embeddings.float().cpu().numpy()
            emb_rows += [{**key, "image": im, "embedding": emb[j].tolist()} for j, im in enumerate(images)]
            pairs = [(images[a], images[p]) for a, p in zip(out.anchor.tolist(), out.positive.tolist())]
            cos = out.cosine.double().cpu().numpy()
            pairs_rows += [{**key, "anchor": images[a], "positive": images[p], "cosine": float(cos[a, p])}
                           for a, p in zip(out.anchor.tolist(), out.positive.tolist())]
            for li, layer in enumerate(layer_names if pairs else []):  # one photo: no pairs, no maps
                m = out.maps[layer].float().cpu().numpy()  # (P, h, w)
                maps_rows += [{**key, "layer": layer, "layer_idx": li, "anchor": a, "positive": p,
                               "height": m.shape[1], "width": m.shape[2], "window": window,
                               "map": m[r].astype("<f4").tobytes()}
                              for r, (a, p) in enumerate(pairs)]
            log.info("[%d/%d] %s: %d images, %d pairs x %d layers (%.1f maps/s so far)", i, n_identities,
                     identity, len(images), len(pairs), len(layer_names),
                     len(maps_rows) / max(time.perf_counter() - t0, 1e-9))
    write_parquet(pa.Table.from_pylist(maps_rows, schema=MAPS_SCHEMA), maps_out, row_group_size=4096)
    write_parquet(pa.Table.from_pylist(pairs_rows, schema=PAIRS_SCHEMA), pairs_out)
    write_parquet(pa.Table.from_pylist(emb_rows, schema=EMBEDDINGS_SCHEMA), embeddings_out)
    log.info("extract %s: %d maps on %s in %.1f s", model_name, len(maps_rows), dev, time.perf_counter() - t0)
