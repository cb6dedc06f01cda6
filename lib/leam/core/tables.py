"""Every Parquet table leam writes: the pipeline's file format, the interface between its stages,
in one place. A stage writes its tables with these schemas (plus the ``leam.code_version``
metadata, :mod:`leam.core.io`), and every reader (the next stage, the database, a user's DuckDB
query) reads them by these column names. One row of each:

==================  =========================================  ==================================
schema              one row per                                written by (results/<run>/...)
==================  =========================================  ==================================
DOWNLOADS_SCHEMA    downloaded photo (URL, sha256, status)     download (data/downloads...)
FACES_SCHEMA        input photo: its face box and 68 points    detect (faces/shard-*.parquet)
ALIGNED_SCHEMA      aligned face frame (PNG bytes, transform)  align (aligned/shard-*.parquet)
LABELS_SCHEMA       frame's per-pixel parser classes (uint8)   parse (labels/shard-*.parquet)
PAIRS_SCHEMA        ordered same-identity pair: its cosine     extract (pairs/model=M/...)
EMBEDDINGS_SCHEMA   photo's embedding (float32 list)           extract (embeddings/model=M/...)
COUNTS_SCHEMA       (pair, layer, selection): pixels per class extract (counts/model=M/...)
MAPS_SCHEMA         stored raw LEAM map of a pair and layer    extract (maps/model=M/...)
IMAGE_MAPS_SCHEMA   per-image mean map of a layer (compare)    extract (image_maps/model=M/...)
RANKINGS_SCHEMA     source pair's top pixels (occlusion)       extract (rankings/model=M/...)
COMPARE_SCHEMA      compared map pair: BC and EMD, or why not  compare (compare/model=M/...)
OCCLUSION_SCHEMA    (pair, size, method): the cosine drop      occlude (occlusion/...)
ATLAS_SCHEMA        (image, method, size) of the atlas test    occlude (atlas/...)
POPULATION_SCHEMA   population-mean map of a source layer      population_atlas (occlusion/population...)
==================  =========================================  ==================================

Column meanings are in the comments beside the fields and in the database's column comments
(:mod:`leam.outputs.catalog`), which ``DESCRIBE`` in DuckDB shows.
"""

from __future__ import annotations

import pyarrow as pa

from leam.core.classes import CLASS_COLUMNS

__all__ = [
    "DOWNLOADS_SCHEMA",
    "FACES_SCHEMA",
    "ALIGNED_SCHEMA",
    "LABELS_SCHEMA",
    "PAIRS_SCHEMA",
    "EMBEDDINGS_SCHEMA",
    "COUNTS_SCHEMA",
    "MAPS_SCHEMA",
    "IMAGE_MAPS_SCHEMA",
    "RANKINGS_SCHEMA",
    "COMPARE_SCHEMA",
    "OCCLUSION_SCHEMA",
    "ATLAS_SCHEMA",
    "POPULATION_SCHEMA",
]


DOWNLOADS_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image", pa.string()),
        ("url", pa.string()),
        ("source_identity", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("http_status", pa.int32()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("attempts", pa.int32()),
        ("seconds", pa.float64()),
    ]
)


FACES_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image", pa.string()),
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_mode", pa.string()),
        ("notes", pa.string()),
        ("n_faces", pa.int32()),
        ("box_left", pa.int32()),
        ("box_top", pa.int32()),
        ("box_right", pa.int32()),
        ("box_bottom", pa.int32()),
        ("score", pa.float64()),
        ("landmarks", pa.list_(pa.float64(), 136)),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
    ]
)


ALIGNED_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image", pa.string()),
        ("reference", pa.string()),
        ("is_reference", pa.bool_()),
        ("size", pa.int32()),
        ("frame_png", pa.binary()),
        ("landmarks", pa.list_(pa.float64(), 136)),
        ("image_to_frame", pa.list_(pa.float64(), 6)),
        ("align_rmse", pa.float64()),
    ]
)


LABELS_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image", pa.string()),
        ("parser", pa.string()),
        ("size", pa.int32()),
        ("labels", pa.binary()),  # size*size uint8, row-major
    ]
)


PAIRS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("identity", pa.string()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("cosine", pa.float64()),
    ]
)


EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("identity", pa.string()),
        ("image", pa.string()),
        ("embedding", pa.list_(pa.float32())),
    ]
)


COUNTS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("layer_idx", pa.int16()),
        ("identity", pa.string()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("parser", pa.string()),
        ("selection", pa.string()),
        ("level", pa.float64()),
        ("n_selected", pa.int32()),
        ("n_pixels", pa.int32()),
    ]
    + [(c, pa.int32()) for c in CLASS_COLUMNS]
)


MAPS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("layer_idx", pa.int16()),
        ("identity", pa.string()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("window", pa.list_(pa.int32(), 4)),  # the frame box the model saw (leam.core.window)
        ("dtype", pa.string()),  # f4 (float32) or f2 (float16)
        ("scale", pa.float32()),  # the stored values times scale are the map (1 for f4)
        ("map", pa.binary()),  # (height, width) little-endian, row-major (leam.core.maps codec)
    ]
)


IMAGE_MAPS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("layer_idx", pa.int16()),
        ("identity", pa.string()),
        ("image", pa.string()),
        ("kind", pa.string()),  # "mean" or a compare selection ("top1", "full")
        ("n_positives", pa.int32()),
        ("size", pa.int32()),
        ("map", pa.binary()),  # (size, size) float32 little-endian
    ]
)


RANKINGS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("identity", pa.string()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("size", pa.int32()),
        ("pixels", pa.binary()),  # int32 little-endian pixel indices (row-major in the size x size frame), ranked
        ("n_relevant", pa.int32()),  # pixels of the frame map above 0: ranks past it are ties at 0, by index only
    ]
)


COMPARE_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("layer", pa.string()),
        ("layer_idx", pa.int16()),
        ("selection", pa.string()),
        ("kind", pa.string()),  # same / different
        ("identity_a", pa.string()),
        ("image_a", pa.string()),
        ("identity_b", pa.string()),
        ("image_b", pa.string()),
        ("bc", pa.float64()),  # NULL when skipped
        ("emd", pa.float64()),  # NULL when skipped
        ("skipped", pa.string()),  # why the pair was not compared (an all-zero map has no distribution); NULL: compared
    ]
)


OCCLUSION_SCHEMA = pa.schema(
    [
        ("source_model", pa.string()),
        ("source_layer", pa.string()),
        ("model", pa.string()),
        ("identity", pa.string()),
        ("anchor", pa.string()),
        ("positive", pa.string()),
        ("method", pa.string()),
        ("size_pct", pa.float64()),
        ("n_occluded", pa.int32()),
        ("cosine_before", pa.float64()),
        ("cosine_after", pa.float64()),
        ("drop", pa.float64()),
        ("skipped", pa.string()),  # why this (pair, size) has no drop (after, drop NULL); NULL: measured
    ]
)


ATLAS_SCHEMA = pa.schema(
    [
        ("source_model", pa.string()),
        ("source_layer", pa.string()),
        ("model", pa.string()),
        ("identity", pa.string()),
        ("image", pa.string()),
        ("method", pa.string()),
        ("size_pct", pa.float64()),
        ("n_occluded", pa.int32()),
        ("n_positives", pa.int32()),
        ("drop", pa.float64()),
        ("skipped", pa.string()),  # why this (image, method, size) has no drop; NULL: measured
    ]
)


POPULATION_SCHEMA = pa.schema(
    [("layer", pa.string()), ("size", pa.int32()), ("count", pa.int64()), ("sum", pa.list_(pa.float64()))]
)
