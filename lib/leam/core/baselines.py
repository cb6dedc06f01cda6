"""Model-free controls: what geometry alone gives, so that a finding about LEAM can fail.

* **Geometry baseline** (for BC/EMD): every frame of one identity is aligned to that identity's
  reference photo, so any two of its frames overlap more than two frames of different people, with
  no model at all. :func:`landmark_maps` makes one model-free map per frame from its 68 aligned
  landmarks (a Gaussian on each); :func:`match_support` keeps as many of its highest pixels as the
  LEAM map it stands beside has, so both are equally sparse (a broad map overlaps with anything, a
  sharp one with little). The compare stage compares the same pairs on them, per layer (rows with
  selection ``geometry:<selection>``). Only the BC/EMD gap *above* this baseline is the model's.
* **Centre baseline** (for "the top 1 % is central"): the pixels nearest the frame centre are nose,
  eyes and brows in any aligned face. :func:`centre_shares` gives, for a frame's labels and a pixel
  count n, the class shares of the n pixels nearest the centre (ties by pixel index) and of a
  centred Gaussian whose 1-sigma disc holds n pixels (sigma = sqrt(n / pi)); a LEAM selection of n
  pixels is compared with them.

Frames are ``S`` x ``S`` (``align.size``); the centre is the point ((S - 1) / 2, (S - 1) / 2) in
pixel-centre coordinates; shares are percent of the n pixels (or of the Gaussian's weight).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa

from leam.core.classes import CLASS_NAMES
from leam.core.io import iter_parquet

__all__ = [
    "GEOMETRY",
    "LANDMARK_SIGMA",
    "CENTRAL",
    "landmark_maps",
    "match_support",
    "centre_order",
    "centre_shares",
    "centre_baseline",
    "CENTRE_SCHEMA",
]

#: prefix of the ``selection`` of the geometry baseline's compare rows: ``geometry:top1`` stands beside ``top1``
GEOMETRY = "geometry:"

#: width (frame pixels, at a 150 px frame) of the Gaussian put on each landmark in the geometry baseline
LANDMARK_SIGMA = 3.0

#: the central-face classes of the paper's finding (Appendix B): nose, eyes and brows
CENTRAL = ("nose", "right eye", "left eye", "right eyebrow", "left eyebrow")


def _ids(names: Iterable[str]) -> np.ndarray:
    return np.array([CLASS_NAMES.index(c) for c in names])


def _labels(labels_paths, wanted: set[tuple[str, str]] | None, size: int):
    """(identity, image, (S * S,) uint8 labels) of the label files, one row group at a time."""
    for batch in iter_parquet(labels_paths, columns=["identity", "image", "size", "labels"]):
        cols = [batch.column(c).to_pylist() for c in ("identity", "image", "size", "labels")]
        for ident, image, s, lab in zip(*cols, strict=True):
            if wanted is not None and (ident, image) not in wanted:
                continue
            if s != size:
                raise ValueError(f"labels of {ident}/{image} are {s} px in a {size} px run")
            yield ident, image, np.frombuffer(lab, np.uint8)


def landmark_maps(aligned_paths, images: Sequence[tuple[str, str]], size: int, sigma: float = LANDMARK_SIGMA):
    """The geometry baseline's model-free maps: (n, S, S) float32, one per (identity, image) of
    ``images``: a Gaussian of ``sigma`` px (scaled with the frame: ``sigma * S / 150``) on each of
    the photo's 68 aligned landmarks (the align stage's ``landmarks``, frame pixels), summed and
    divided by the sum. An image without landmarks gets an all-zero map."""
    index = {k: i for i, k in enumerate(images)}
    out = np.zeros((len(images), size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s2 = 2 * (sigma * size / 150) ** 2
    for batch in iter_parquet(aligned_paths, columns=["identity", "image", "landmarks"]):
        for ident, image, lm in zip(
            *(batch.column(c).to_pylist() for c in ("identity", "image", "landmarks")), strict=True
        ):
            if (ident, image) not in index or lm is None:
                continue
            m = np.zeros((size, size), np.float32)
            for x, y in np.asarray(lm, np.float32).reshape(-1, 2):
                m += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / s2)
            if m.sum() > 0:
                out[index[(ident, image)]] = m / m.sum()
    return out


def match_support(model_free: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(n, S, S) model-free maps restricted to as many pixels as each LEAM map of ``maps`` has
    above 0 (its highest ones, ties by pixel index), renormalised: the geometry baseline of a
    selection is exactly as sparse as the LEAM maps it stands beside. A LEAM map with no pixel gives
    an all-zero map."""
    n, s, _ = maps.shape
    flat = model_free.reshape(n, -1)
    out = np.zeros_like(flat)
    for i, k in enumerate((maps.reshape(n, -1) > 0).sum(1)):
        if k == 0:
            continue
        top = np.argsort(-flat[i], kind="stable")[:k]
        out[i, top] = flat[i, top]
        total = out[i].sum()
        out[i] = out[i] / total if total > 0 else 0
    return out.reshape(n, s, s)


@lru_cache(maxsize=4)
def centre_order(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices sorted by distance to the frame centre, ties by index; their squared
    distances in pixels^2), both (S * S,)."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = ((yy - c) ** 2 + (xx - c) ** 2).ravel()
    order = np.argsort(d2, kind="stable")
    return order, d2


def centre_shares(labels: np.ndarray, ns: Sequence[int], classes: Sequence[str]) -> np.ndarray:
    """Shares (%) of ``classes`` among the n pixels nearest the centre and under a centred Gaussian.

    ``labels``: (S * S,) or (S, S) class ids of one frame; ``ns``: pixel counts. Returns (len(ns), 2):
    column 0 the disc (the n nearest pixels), column 1 the Gaussian (sigma = sqrt(n / pi), the
    radius of a disc of n pixels).
    """
    lab = np.asarray(labels).ravel()
    size = int(round(np.sqrt(lab.size)))
    order, d2 = centre_order(size)
    hit = np.isin(lab, _ids(classes))
    cum = np.concatenate([[0], np.cumsum(hit[order])])
    n = np.clip(np.asarray(ns, dtype=np.int64), 1, lab.size)  # (N,)
    disc = 100.0 * cum[n] / n
    w = np.exp(-d2[None, :] / (2 * n[:, None] / np.pi))  # (N, S * S)
    gauss = 100.0 * (w @ hit) / w.sum(1)
    return np.stack([disc, gauss], 1)


CENTRE_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image", pa.string()),
        ("n_pixels", pa.int64()),  # the size of the LEAM selection it stands beside
        ("disc_central_pct", pa.float64()),  # % nose + eyes + brows of the n pixels nearest the centre
        ("disc_nose_pct", pa.float64()),  # % nose of them
        ("gauss_central_pct", pa.float64()),  # the same under a centred Gaussian of sigma sqrt(n / pi)
        ("gauss_nose_pct", pa.float64()),
    ]
)


def centre_baseline(labels_paths, wanted: dict[tuple[str, str], set[int]], size: int) -> pa.Table:
    """The centre baseline of every (identity, image) -> pixel counts of ``wanted``: one row per
    (identity, image, n) with :data:`CENTRE_SCHEMA`'s shares. Label files are read one row group at
    a time."""
    rows = []
    for ident, image, lab in _labels(labels_paths, set(wanted), size):
        ns = sorted(wanted[(ident, image)])
        central = centre_shares(lab, ns, CENTRAL)
        nose = centre_shares(lab, ns, ("nose",))
        for n, c, z in zip(ns, central, nose, strict=True):
            rows.append(
                {
                    "identity": ident,
                    "image": image,
                    "n_pixels": n,
                    "disc_central_pct": float(c[0]),
                    "disc_nose_pct": float(z[0]),
                    "gauss_central_pct": float(c[1]),
                    "gauss_nose_pct": float(z[1]),
                }
            )
    rows.sort(key=lambda r: (r["identity"], r["image"], r["n_pixels"]))
    return pa.Table.from_pylist(rows, schema=CENTRE_SCHEMA)
