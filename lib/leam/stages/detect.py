"""Detect + filter: exactly one face per photo, 68 dlib landmarks, duplicates found and used once.

Per image the faces table records: the decoded size, the face box and detector score, the number
of faces at or above ``min_score``, the 68 landmarks (image pixels, x then y), and a ``status``:

* ``ok``: one face, landmarks found, not a duplicate;
* ``rejected``: unusable, with a ``reason`` (``no-face``, ``multiple-faces``, ``empty-file``,
  ``not-an-image``, ``truncated``, ``decode-error``, ``too-large``, ``too-small``);
* ``duplicate``: the same photo as ``duplicate_of`` (same identity), by file hash (``exact``) or by
  near-identical face chips (``near``: mean absolute difference of 64x64 greyscale dlib chips
  below ``near_duplicate_mad`` grey levels; catches re-encodes, resizes and crops of one photo).
  Of a group of duplicates the photo with the most pixels is kept, then the smallest file, then
  the first name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from leam.core.images import MAX_BYTES, ImageEntry, ImageRejected, entries_from_paths, load_rgb
from leam.core.io import sha256_bytes, write_parquet
from leam.core.tables import FACES_SCHEMA
from leam.models.resources import package_file
from leam.options import DetectOptions

__all__ = ["FaceDetector", "Detection", "detect_images", "find_duplicates", "detect_shard", "run"]

log = logging.getLogger(__name__)

LANDMARKS_68 = "models/shape_predictor_68_face_landmarks.dat"


@dataclass
class Detection:
    """One image's detection result; ``landmarks`` is (68, 2) float64 image pixels or None."""

    identity: str
    image: str
    path: str
    bytes: int = 0
    sha256: str = ""
    width: int = 0
    height: int = 0
    source_mode: str = ""
    notes: str = ""
    n_faces: int = 0
    box: tuple[int, int, int, int] | None = None
    score: float | None = None
    landmarks: np.ndarray | None = None
    chip: np.ndarray | None = field(default=None, repr=False)
    status: str = "ok"
    reason: str = ""
    duplicate_of: str | None = None


class FaceDetector:
    """dlib HOG face detector + 68-point shape predictor (both offline, shipped in packages).

    Args:
        upsample: HOG upsampling passes (1 finds faces down to ~40 px).
        min_score: detections below this HOG score are not counted as faces (dlib's default 0).
    """

    def __init__(self, upsample: int = 1, min_score: float = 0.0):
        import dlib

        self.upsample = upsample
        self.min_score = min_score
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(package_file("face_recognition_models", LANDMARKS_68)))
        self._dlib = dlib

    def __call__(self, rgb: np.ndarray):
        """(H, W, 3) uint8 -> list of (box (l, t, r, b), score, landmarks (68, 2)), best first."""
        rects, scores, _ = self._detector.run(rgb, self.upsample, self.min_score)
        out = []
        for rect, score in sorted(zip(rects, scores, strict=True), key=lambda rs: -rs[1]):
            if score < self.min_score:
                continue
            shape = self._predictor(rgb, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            out.append(((rect.left(), rect.top(), rect.right(), rect.bottom()), float(score), pts, shape))
        return out

    def chip(self, rgb: np.ndarray, shape, size: int = 64) -> np.ndarray:
        """dlib's aligned face chip as (size, size) float32 greyscale, for duplicate checks."""
        chip = self._dlib.get_face_chip(rgb, shape, size=size, padding=0.25)
        return chip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def detect_images(
    entries: Sequence[ImageEntry], detector: FaceDetector, *, max_side: int | None = None, max_bytes: int = MAX_BYTES
) -> list[Detection]:
    """Load and detect every image; failures become ``rejected`` rows, never exceptions.

    Each file's size is checked before it is read, it is read once (hash and decode from the same
    bytes), and detection runs on a copy reduced to ``max_side`` pixels on its longer side
    (:func:`leam.core.images.load_rgb`); boxes and landmarks are given in the photo's own pixels.
    """
    results = []
    for i, e in enumerate(entries, 1):
        d = Detection(identity=e.identity, image=e.image, path=e.path)
        try:
            d.bytes = os.stat(e.path).st_size
            if d.bytes > max_bytes:
                raise ImageRejected(e.path, "too-large-file", f"{d.bytes} bytes > {max_bytes} (not read)")
            raw = Path(e.path).read_bytes()
            d.bytes, d.sha256 = len(raw), sha256_bytes(raw)
            img = load_rgb(e.path, data=raw, max_side=max_side, max_bytes=max_bytes)
            del raw
            d.width, d.height = img.size
            d.source_mode, d.notes = img.source_mode, "; ".join(img.notes)
            faces = detector(img.rgb)
            d.n_faces = len(faces)
            if faces:
                box, d.score, pts, shape = faces[0]
                sx, sy = img.scale  # back to the photo's own pixels (exact when it was not reduced)
                d.box = (round(box[0] / sx), round(box[1] / sy), round(box[2] / sx), round(box[3] / sy))
                d.landmarks = pts / np.array([sx, sy])
                d.chip = detector.chip(img.rgb, shape)
            if d.n_faces == 0:
                d.status, d.reason = "rejected", "no-face"
            elif d.n_faces > 1:
                d.status, d.reason = "rejected", f"multiple-faces: {d.n_faces} faces with score >= {detector.min_score}"
        except ImageRejected as err:
            d.status, d.reason = "rejected", err.reason + (f": {err.detail}" if err.detail else "")
        except OSError as err:
            d.status, d.reason = "rejected", f"unreadable: {err}"
        log.info(
            "[%d/%d] %s/%s: %s%s", i, len(entries), e.identity, e.image, d.status, f" ({d.reason})" if d.reason else ""
        )
        results.append(d)
    return results


def find_duplicates(dets: list[Detection], near_duplicate_mad: float) -> None:
    """Mark exact and near duplicates within each identity in place (see module docstring)."""
    by_identity: dict[str, list[Detection]] = {}
    for d in dets:
        if d.status == "ok":
            by_identity.setdefault(d.identity, []).append(d)
    for group in by_identity.values():
        # keep order: most pixels, then smallest file, then name
        group.sort(key=lambda d: (-(d.width * d.height), d.bytes, d.image))
        kept: list[Detection] = []
        for d in group:
            for k in kept:
                if d.sha256 == k.sha256:
                    d.status, d.reason, d.duplicate_of = "duplicate", "exact: same file bytes", k.image
                    break
                assert d.chip is not None and k.chip is not None  # every detected face has one
                mad = float(np.abs(d.chip - k.chip).mean())
                if mad <= near_duplicate_mad:
                    d.status, d.duplicate_of = "duplicate", k.image
                    d.reason = f"near: face chips differ by {mad:.2f} grey levels (<= {near_duplicate_mad})"
                    break
            else:
                kept.append(d)
        for d in group:
            if d.status == "duplicate":
                log.info("%s/%s is a duplicate of %s (%s)", d.identity, d.image, d.duplicate_of, d.reason)


def faces_table(dets: Sequence[Detection]) -> pa.Table:
    """Detections as a table with :data:`FACES_SCHEMA` (landmarks flattened x0, y0, x1, y1...)."""

    def col(f):
        return [f(d) for d in dets]

    box = lambda i: col(lambda d: None if d.box is None else int(d.box[i]))  # noqa: E731
    return pa.table(
        {
            "identity": col(lambda d: d.identity),
            "image": col(lambda d: d.image),
            "path": col(lambda d: d.path),
            "bytes": col(lambda d: d.bytes),
            "sha256": col(lambda d: d.sha256),
            "width": col(lambda d: d.width),
            "height": col(lambda d: d.height),
            "source_mode": col(lambda d: d.source_mode),
            "notes": col(lambda d: d.notes),
            "n_faces": col(lambda d: d.n_faces),
            "box_left": box(0),
            "box_top": box(1),
            "box_right": box(2),
            "box_bottom": box(3),
            "score": col(lambda d: d.score),
            "landmarks": col(lambda d: None if d.landmarks is None else d.landmarks.reshape(-1).tolist()),
            "status": col(lambda d: d.status),
            "reason": col(lambda d: d.reason),
            "duplicate_of": col(lambda d: d.duplicate_of),
        },
        schema=FACES_SCHEMA,
    )


def run(*, inputs, outputs, options: DetectOptions, unusable: Sequence[tuple[str, str, str, str]] = ()) -> pa.Table:
    """The workflow's entry point (rule ``detect``): ``inputs.images`` (``.../{identity}/{image}``
    paths) in, ``outputs.faces`` out; ``unusable`` as :func:`detect_shard`."""
    return detect_shard(entries_from_paths(inputs.images), outputs.faces, options=options, unusable=unusable)


def detect_shard(
    entries: Sequence[ImageEntry],
    out_path: str,
    *,
    options: DetectOptions,
    unusable: Sequence[tuple[str, str, str, str]] = (),
) -> pa.Table:
    """Detect stage for one shard: write the faces table to ``out_path`` and return it.

    ``options.max_side``: detect on copies reduced to this many pixels on the longer side (None:
    full size); ``unusable``: (identity, image, path, reason) of the shard's inputs that are no files
    or have unusable names (:func:`leam.stages.dataset.list_inputs`): rejected rows with that reason,
    not read.
    """
    o = options
    detector = FaceDetector(upsample=o.upsample, min_score=o.min_score)
    dets = detect_images(entries, detector, max_side=o.max_side)
    find_duplicates(dets, o.near_duplicate_mad)
    for identity, image, _path, reason in unusable:
        log.info("%s/%s: rejected (%s)", identity, image, reason)
    dets = sorted(
        dets + [Detection(i, m, p, status="rejected", reason=r) for i, m, p, r in unusable],
        key=lambda d: (d.identity, d.image),
    )
    table = faces_table(dets)
    write_parquet(table, out_path)
    n_ok = sum(d.status == "ok" for d in dets)
    log.info(
        "detect: %d images, %d ok, %d rejected, %d duplicates",
        len(dets),
        n_ok,
        sum(d.status == "rejected" for d in dets),
        sum(d.status == "duplicate" for d in dets),
    )
    return table
