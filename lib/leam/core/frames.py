"""Reading the stages' tables back one identity at a time: aligned frames, parser labels, image maps.

Every per-identity stage (extract, occlude) streams its inputs through these readers, so memory
holds one identity's photos whatever the shard's size. Files are sorted by (identity, image)
(the writers' order); a file out of that order is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from leam.core.images import decode_png
from leam.core.io import iter_parquet
from leam.core.maps import decode_maps

__all__ = [
    "row_batches",
    "prefetch",
    "sorted_groups",
    "iter_identities",
    "iter_labels",
    "identity_inputs",
    "read_image_maps",
    "image_layers",
]


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


def row_batches(source, columns: Sequence[str], batch_size: int) -> Iterator[list[dict]]:
    """Rows of ``source`` (a table, or the path of a Parquet file, streamed) as lists of at most
    ``batch_size`` dicts of ``columns``, in the file's order: one batch in memory at a time."""
    if isinstance(source, pa.Table):
        batches = source.select(list(columns)).to_batches(max_chunksize=batch_size)
    else:
        batches = iter_parquet(source, columns=list(columns), batch_size=batch_size)
    for batch in batches:
        if batch.num_rows:
            yield batch.to_pylist()


def sorted_groups(
    batches, source, columns: Sequence[str], key: Sequence[str] = ("identity", "image")
) -> Iterator[tuple[str, list[dict]]]:
    """(identity, its rows) of record batches sorted by ``key`` (its first column the identity),
    one identity at a time; rows out of that order raise (``source`` names the file)."""
    group: list[dict] = []
    last: tuple | None = None
    for batch in batches:
        for r in batch.select(list(columns)).to_pylist():
            k = tuple(r[c] for c in key)
            if last is not None and k <= last:
                raise ValueError(f"{source}: rows are not sorted by ({', '.join(key)}) at {k}")
            last = k
            if group and r["identity"] != group[0]["identity"]:
                yield group[0]["identity"], group
                group = []
            group.append(r)
    if group:
        yield group[0]["identity"], group


def iter_identities(aligned) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """(identity, sorted image names, (n, S, S, 3) uint8 frames) for each identity, sorted.

    ``aligned``: an aligned-frames table, or the path of one (streamed: one identity in memory).
    """
    cols = ["identity", "image", "frame_png"]
    if isinstance(aligned, pa.Table):
        batches = aligned.sort_by([("identity", "ascending"), ("image", "ascending")]).to_batches()
    else:
        batches = iter_parquet(aligned, columns=cols, batch_size=64)
    source = "aligned table" if isinstance(aligned, pa.Table) else aligned
    for identity, rows in sorted_groups(batches, source, cols):
        yield identity, [r["image"] for r in rows], np.stack([decode_png(r["frame_png"]) for r in rows])


def iter_labels(path) -> Iterator[tuple[str, list[str], np.ndarray, str]]:
    """(identity, sorted image names, (n, S, S) uint8 parser labels, parser name) of a labels file,
    one identity at a time (the parse stage writes the aligned table's order)."""
    cols = ["identity", "image", "parser", "size", "labels"]
    for identity, rows in sorted_groups(iter_parquet(path, columns=cols, batch_size=256), path, cols):
        yield (
            identity,
            [r["image"] for r in rows],
            np.stack([np.frombuffer(r["labels"], np.uint8).reshape(r["size"], r["size"]) for r in rows]),
            rows[0]["parser"],
        )


def identity_inputs(aligned, labels):
    """(identity, images, frames, labels, parser) per identity: the aligned and labels files read
    side by side, each once."""
    lab = iter_labels(labels)
    for identity, images, frames in iter_identities(aligned):
        got = next(lab, None)
        if got is None or got[0] != identity or got[1] != images:
            raise ValueError(
                f"{labels}: no parser labels for {identity}/{images[0]} in the aligned order (rerun the parse stage)"
            )
        yield identity, images, frames, got[2], got[3]


def read_image_maps(paths, layer: str, kind: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The image maps of one layer and kind from extract's image-maps files (read only those rows).

    Returns (sorted (identity, image) keys, (n, S, S) float32 maps in that order).
    """
    keys: list[tuple[str, str]] = []
    parts: list[np.ndarray] = []
    for batch in iter_parquet(
        paths, columns=["identity", "image", "size", "map"], filters=[("layer", "=", layer), ("kind", "=", kind)]
    ):
        if batch.num_rows == 0:
            continue
        size = batch.column("size")[0].as_py()
        keys += list(zip(batch.column("identity").to_pylist(), batch.column("image").to_pylist(), strict=True))
        parts.append(decode_maps(batch.column("map"), size, size))
    if not parts:
        return [], np.empty((0, 0, 0), np.float32)
    maps = np.concatenate(parts)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[i] for i in order], maps[order]


def image_layers(paths) -> list[tuple[int, str]]:
    """(layer_idx, layer) of the layers present in image-maps files, sorted."""
    seen: set[tuple[int, str]] = set()
    for batch in iter_parquet(paths, columns=["layer_idx", "layer"]):
        seen |= set(zip(batch.column("layer_idx").to_pylist(), batch.column("layer").to_pylist(), strict=True))
    return sorted(seen)
