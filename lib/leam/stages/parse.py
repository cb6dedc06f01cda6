"""Face parsing into FaRL's 19 classes (and leam's ``unparsed``), in the aligned frame.

``landmarks`` (the offline default) needs nothing downloaded: it draws polygons from the 68 dlib
landmarks (already in frame coordinates):

* face (2): the jaw line (0-16) closed over the forehead. The forehead reaches an estimated
  hairline: by the facial thirds (hairline to brows = brows to the nose base, landmark 33), the
  brow line raised by the brow-to-nose-base height at the midline, tapering to 0.6 of it at the
  temples (the hairline curves down at the sides);
* right/left eyebrow (6/7): the brow points 17-21 / 22-26 and the same points lowered by
  0.08 x the inter-ocular distance (a band);
* right/left eye (8/9): 36-41 / 42-47;
* nose (10): the bridge from the nasion (27), 0.55 x the inner-canthal distance (39-42) wide, to the
  tip (30), where the wings (alae) reach 1.3 x the nostril-base width (31-35), over the nostril base
  31-35 with the wings' outer edge;
* upper lip (13): outer 48-54 over inner 60-64; lower lip (12): outer 54-59,48 over inner 64-67,60;
* inner mouth (11): 60-67;
* everything else: **unparsed** (19): hair, background, neck, ears and clothes look alike to
  landmarks, so those pixels get no FaRL class; in tables they are ``unparsed``, never background.

It cannot see background, neck, clothes, ears, hair, eyeglasses, hat, earrings or necklace: those
classes are *absent* (NULL in tables), not zero. Later polygons are painted over earlier ones in
the order face, brows, eyes, nose, lips, inner mouth.

``farl`` is pyfacer's FaRL parser (``farl/celebm/448``, all 19 classes), run on the aligned frames
with the five points it expects (eye centres, nose tip, mouth corners) taken from the 68 frame
landmarks; its weight file (a TorchScript archive, which pyfacer loads with ``torch.jit.load``) must
be on disk: leam never downloads it, and checks its sha256 when one is configured. A larger
``align.size`` (e.g. 448) gives FaRL more pixels to work with.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw

from leam.core.classes import FARL_TAGS, PARSER_CANNOT_SEE, PARSER_VISIBLE, UNPARSED
from leam.core.device import pick_device
from leam.core.frames import row_batches
from leam.core.images import decode_png
from leam.core.io import ParquetSink
from leam.core.tables import LABELS_SCHEMA
from leam.options import ParseOptions

__all__ = [
    "LandmarkParser",
    "FarlParser",
    "PARSERS",
    "make_parser",
    "parse_shard",
    "run",
]

log = logging.getLogger(__name__)


class LandmarkParser:
    """Offline parser: (68, 2) frame landmarks -> (S, S) uint8 label map with FaRL ids."""

    name = "landmarks"
    visible = PARSER_VISIBLE["landmarks"]
    #: what it cannot see, for tables and the report
    cannot_see = PARSER_CANNOT_SEE["landmarks"]

    def polygons(self, pts: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(class id, (K, 2) polygon) in painting order."""
        pts = np.asarray(pts, np.float64).reshape(68, 2)
        eye_r, eye_l = pts[36:42].mean(0), pts[42:48].mean(0)
        iod = np.linalg.norm(eye_l - eye_r)
        up = np.array([0.0, -1.0])
        right = (eye_l - eye_r) / max(iod, 1e-9)  # image x along the eyes
        brows = pts[17:27]
        # facial thirds: hairline above the brows by the brows-to-nose-base height, less at the temples
        third = max(0.0, float(pts[33, 1] - brows[:, 1].mean()))
        centre = brows[:, 0].mean()
        half = max(float(np.ptp(brows[:, 0])) / 2, 1e-9)
        taper = 1.0 - 0.4 * np.clip(np.abs(brows[::-1, 0] - centre) / half, 0, 1) ** 2
        forehead = brows[::-1] + (third * taper)[:, None] * up
        face = np.vstack([pts[0:17], pts[16:17] + 0.6 * third * up, forehead, pts[0:1] + 0.6 * third * up])
        band = 0.08 * iod
        brow_r = np.vstack([pts[17:22], pts[21:16:-1] - band * up])
        brow_l = np.vstack([pts[22:27], pts[26:21:-1] - band * up])
        icd = np.linalg.norm(pts[42] - pts[39])
        base_w = np.linalg.norm(pts[35] - pts[31])
        mid = (pts[31] + pts[35]) / 2
        root = 0.275 * icd * right  # half the bridge width at the nasion
        wing = 0.65 * base_w * right  # half the alar width at the tip's height
        tip = pts[30] - (pts[30] - mid) @ right * right  # the tip, on the nose's midline
        nose = np.vstack(
            [
                pts[27] - root,
                tip - wing,
                pts[31] - 0.15 * base_w * right,
                pts[31:36],
                pts[35] + 0.15 * base_w * right,
                tip + wing,
                pts[27] + root,
            ]
        )
        upper_lip = np.vstack([pts[48:55], pts[64:59:-1]])
        lower_lip = np.vstack([pts[54:60], pts[48:49], pts[60:61], pts[67:63:-1]])
        inner = pts[60:68]
        return [
            (2, face),
            (6, brow_r),
            (7, brow_l),
            (8, pts[36:42]),
            (9, pts[42:48]),
            (10, nose),
            (13, upper_lip),
            (12, lower_lip),
            (11, inner),
        ]

    def __call__(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        """(68, 2) landmarks in frame pixels (centres at integers) -> (size, size) uint8 labels."""
        img = Image.new("L", (size, size), UNPARSED)
        draw = ImageDraw.Draw(img)  # ImageDraw puts pixel centres at integer coordinates, as leam does
        for cid, poly in self.polygons(landmarks):
            draw.polygon([(float(x), float(y)) for x, y in poly], fill=cid)
        return np.array(img, dtype=np.uint8)


class FarlParser:
    """pyfacer's FaRL celebm/448 parser on aligned frames (all 19 FaRL classes).

    Args:
        weights: path of ``face_parsing.farl.celebm.main_ema_181500_jit.pt``.
    """

    name = "farl"
    visible = PARSER_VISIBLE["farl"]
    cannot_see = PARSER_CANNOT_SEE["farl"]

    def __init__(self, weights: str | os.PathLike, device: str | torch.device = "cpu"):
        with warnings.catch_warnings():
            # pyfacer imports deprecated timm paths and loads TorchScript (deprecated in torch 2.14)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            from facer.face_parsing import FaRLFaceParser

            self.device = torch.device(device)
            self._net = FaRLFaceParser("celebm/448", model_path=str(weights), device=self.device)
        if list(self._net.label_names) != list(FARL_TAGS):
            raise ValueError(f"{weights}: FaRL labels {self._net.label_names} != leam's {list(FARL_TAGS)}")

    @staticmethod
    def five_points(landmarks: np.ndarray) -> np.ndarray:
        """(68, 2) -> (5, 2): image-left eye centre, image-right eye centre, nose tip, mouth corners."""
        p = np.asarray(landmarks, np.float64).reshape(68, 2)
        return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])

    def batch(self, frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 frames + (B, 68, 2) landmarks -> (B, S, S) uint8 labels."""
        images = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().to(self.device)  # (B, 3, S, S)
        pts = torch.from_numpy(np.stack([self.five_points(lm) for lm in landmarks])).float().to(self.device)
        data = {"points": pts, "image_ids": torch.arange(len(frames), device=self.device)}
        with torch.inference_mode():
            logits = self._net(images, data)["seg"]["logits"]  # (B, 19, S, S)
        return logits.argmax(1).to(torch.uint8).cpu().numpy()


PARSERS: dict[str, type[LandmarkParser] | type[FarlParser]] = {"landmarks": LandmarkParser, "farl": FarlParser}


def make_parser(cfg: dict, *, device: str, base_dir: str | os.PathLike = "."):
    """The parser of config section ``parser`` (``{name, weights}``); ``device``: config ``device``
    (``auto``: CUDA when present), used by FaRL only."""
    if cfg["name"] == "landmarks":
        return LandmarkParser()
    from leam.models.weights import weights_path

    return FarlParser(
        weights_path("parser", cfg["weights"], "parser.weights.path", base_dir), device=pick_device(device)
    )


def run(*, inputs, outputs, options: ParseOptions) -> int:
    """The workflow's entry point (rule ``parse``): ``inputs.aligned`` in (streamed), ``outputs.labels`` out."""
    return parse_shard(inputs.aligned, outputs.labels, options=options)


def parse_shard(aligned, out_path: str, *, options: ParseOptions) -> int:
    """Parse stage for one shard: aligned frames (a table or the path of one, streamed) in, label
    table (:data:`leam.core.tables.LABELS_SCHEMA`) written to ``out_path`` in the same order,
    ``options.batch`` frames in memory at a time; returns the number of rows written.
    """
    p = make_parser(options.parser, device=options.device)
    batch = options.batch
    columns = ["identity", "image", "size", "landmarks"] + ([] if isinstance(p, LandmarkParser) else ["frame_png"])
    total = aligned.num_rows if isinstance(aligned, pa.Table) else pq.ParquetFile(aligned).metadata.num_rows
    with ParquetSink(out_path, LABELS_SCHEMA, row_group_size=256) as sink:
        for chunk in row_batches(aligned, columns, batch):
            lms = np.stack([np.asarray(r["landmarks"]).reshape(68, 2) for r in chunk])
            if isinstance(p, LandmarkParser):
                labs = [p(lm, r["size"]) for lm, r in zip(lms, chunk, strict=True)]
            else:
                labs = list(p.batch(np.stack([decode_png(r["frame_png"]) for r in chunk]), lms))
            sink.add(
                [
                    {
                        "identity": r["identity"],
                        "image": r["image"],
                        "parser": p.name,
                        "size": r["size"],
                        "labels": np.ascontiguousarray(lab, dtype=np.uint8).tobytes(),
                    }
                    for r, lab in zip(chunk, labs, strict=True)
                ]
            )
            log.info("[%d/%d] parsed (%s)", sink.rows, total, p.name)
    return sink.rows
