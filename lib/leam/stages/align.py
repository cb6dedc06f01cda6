"""Align: every photo of an identity warped into one square frame fixed by a reference photo.

The paper's procedure (section 3.3): a reference image is chosen at random per identity (seeded
here: ``numpy.random.default_rng([seed, crc32(identity)])``), rotated so that the outer eye
corners (dlib landmarks 36 and 45) are level, and every other image of the identity is moved onto
the reference by the least-squares similarity (rotation, uniform scale, translation; no
reflection; Umeyama 1991) between its landmarks 17-67 and the reference's, i.e. the best overlap
of brows, eyes, nose and mouth (the jaw line is left out, as dlib does for its chips).

The reference's scale and centre are dlib's face-chip geometry (``get_face_chip_details`` with
``padding``), so at ``size`` 150 and padding 0.25 the frame is what dlib's recognition network was
trained on, and faces of all identities sit at about the same place and size.

Coordinates: pixel centres at integers, x to the right, y down; a frame is ``(size, size)``.
Sampling is bilinear after a box-filter reduction by the integer part of the scale (no aliasing
when a large photo is shrunk); pixels from outside the photo are black.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from leam.core.heap import map_large_buffers
from leam.core.images import encode_png, load_rgb
from leam.core.io import ParquetSink, read_parquet
from leam.core.tables import ALIGNED_SCHEMA
from leam.options import AlignOptions

__all__ = [
    "umeyama",
    "reference_transform",
    "warp_image",
    "choose_reference",
    "frame_transforms",
    "align_identity",
    "align_shard",
    "run",
    "ALIGN_POINTS",
]

log = logging.getLogger(__name__)

#: landmarks used for the similarity fit: brows, nose, eyes, mouth (dlib's chip points)
ALIGN_POINTS = np.arange(17, 68)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` (no reflection).

    Args:
        src, dst: (N, 2) point sets.
    Returns:
        (2, 3) matrix ``[sR | t]`` mapping src points to dst points.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (xs**2).sum() / len(src)
    s = (sig * d).sum() / var_s
    t = mu_d - s * r @ mu_s
    return np.hstack([s * r, t[:, None]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -(a @ m[:, 2])[:, None]])


def reference_transform(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """(2, 3) image->frame similarity for a reference photo: eye corners level, dlib chip scale.

    Args:
        landmarks: (68, 2) image pixels.
    """
    import dlib

    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks]
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    rect = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    details = dlib.get_face_chip_details(dlib.full_object_detection(rect, pts), size=size, padding=padding)
    r = details.rect
    centre = np.array([r.center().x, r.center().y])
    scale = r.width() / size  # image pixels per frame pixel
    dx, dy = landmarks[45] - landmarks[36]
    theta = np.arctan2(dy, dx)  # eye line angle in the image
    c, s = np.cos(theta), np.sin(theta)
    rot_inv = np.array([[c, s], [-s, c]])  # rotates the eye line onto the x axis
    a = rot_inv / scale
    t = (size - 1) / 2.0 - a @ centre
    return np.hstack([a, t[:, None]])


def warp_image(rgb: np.ndarray, image_to_frame: np.ndarray, size: int) -> np.ndarray:
    """Warp (H, W, 3) uint8 into a (size, size, 3) uint8 frame by the (2, 3) similarity."""
    frame_to_image = _invert(image_to_frame)
    scale = float(np.sqrt(abs(np.linalg.det(frame_to_image[:, :2]))))
    k = max(1, int(np.floor(scale)))
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].to(torch.float64)  # (1, 3, H, W)
    if k > 1:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % k, 0, (-h) % k), mode="replicate")
        x = F.avg_pool2d(x, k)  # box filter; reduced pixel (i) covers source [k i, k i + k)
    # frame pixel -> source pixel in the reduced image: p_red = (p - (k - 1) / 2) / k
    m = frame_to_image.copy()
    m[:, :2] /= k
    m[:, 2] = (m[:, 2] - (k - 1) / 2.0) / k
    h, w = x.shape[-2:]
    u = torch.arange(size, dtype=torch.float64)
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    px = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    py = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)[None]  # align_corners=False
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def choose_reference(identity: str, images: Sequence[str], seed: int) -> str:
    """The identity's reference image: a seeded uniform choice among its sorted image names."""
    rng = np.random.default_rng([seed, zlib.crc32(identity.encode("utf-8"))])
    names = sorted(images)
    return names[int(rng.integers(len(names)))]


def frame_transforms(
    landmarks: dict[str, np.ndarray], reference: str, size: int, padding: float
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """The alignment of one identity's photos onto its reference photo, from their (68, 2) landmarks
    (photo pixels): {image: ((2, 3) image->frame transform, (68, 2) landmarks in the frame, RMS
    residual of landmarks 17-67 against the reference's, frame pixels; 0 for the reference)}."""
    ref_m = reference_transform(landmarks[reference], size, padding)
    ref_pts = _apply(ref_m, landmarks[reference])
    out = {}
    for name, lm in landmarks.items():
        m = ref_m if name == reference else umeyama(lm[ALIGN_POINTS], ref_pts[ALIGN_POINTS])
        pts = _apply(m, lm)
        out[name] = (m, pts, float(np.sqrt(((pts[ALIGN_POINTS] - ref_pts[ALIGN_POINTS]) ** 2).sum(1).mean())))
    return out


def align_identity(
    identity: str, rows: Sequence[dict], *, size: int, padding: float, seed: int, max_side: int | None = None
) -> list[dict]:
    """Align one identity's usable photos; ``rows`` are faces-table rows with status ``ok``.

    Returns one dict per photo: frame (PNG bytes), frame landmarks, image->frame transform, and the
    RMS landmark residual against the reference (frame pixels; 0 for the reference itself).
    ``max_side``: warp from the photo reduced as the detect stage read it (``detect.max_side``).
    """
    ref_name = choose_reference(identity, [r["image"] for r in rows], seed)
    lm = {r["image"]: np.asarray(r["landmarks"], np.float64).reshape(68, 2) for r in rows}
    transforms = frame_transforms(lm, ref_name, size, padding)
    out = []
    for r in sorted(rows, key=lambda r: r["image"]):
        name = r["image"]
        m, pts, rmse = transforms[name]
        img = load_rgb(r["path"], max_side=max_side)  # the copy detect saw: bounded memory
        m_img = m.copy()
        m_img[:, :2] /= np.array(img.scale)  # photo pixels -> pixels of the reduced copy
        frame = warp_image(img.rgb, m_img, size)
        out.append(
            {
                "identity": identity,
                "image": name,
                "reference": ref_name,
                "is_reference": name == ref_name,
                "size": size,
                "frame_png": encode_png(frame),
                "landmarks": pts.reshape(-1).tolist(),
                "image_to_frame": m.reshape(-1).tolist(),
                "align_rmse": rmse,
            }
        )
        log.info("aligned %s/%s -> reference %s (landmark RMSE %.2f px)", identity, name, ref_name, rmse)
    return out


def run(*, inputs, outputs, options: AlignOptions) -> int:
    """The workflow's entry point (rule ``align``): ``inputs.faces`` in, ``outputs.aligned`` out."""
    return align_shard(read_parquet(inputs.faces), outputs.aligned, options=options)


def align_shard(faces: pa.Table, out_path: str, *, options: AlignOptions) -> int:
    """Align stage for one shard: faces table in, aligned table (:data:`leam.core.tables.ALIGNED_SCHEMA`)
    written to ``out_path`` identity by identity (one identity's frames in memory at a time);
    returns the number of rows written."""
    o = options
    map_large_buffers()  # decoded photos return to the system when freed: flat memory however many photos
    ok: dict[str, list[dict]] = {}
    for r in faces.select(["identity", "image", "path", "status", "landmarks"]).to_pylist():
        if r["status"] == "ok":
            ok.setdefault(r["identity"], []).append(r)
    with ParquetSink(out_path, ALIGNED_SCHEMA, row_group_size=256) as sink:
        for identity in sorted(ok):
            sink.add(
                align_identity(identity, ok[identity], size=o.size, padding=o.padding, seed=o.seed, max_side=o.max_side)
            )
    return sink.rows
