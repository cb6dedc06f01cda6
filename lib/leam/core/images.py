"""Reading photos safely: one function that returns an RGB uint8 array or says why it cannot.

Handled: EXIF orientation (rotated upright), greyscale / palette / CMYK / 16-bit / alpha
(converted to 8-bit RGB; alpha is dropped after compositing on black), decompression bombs,
oversized files (checked before they are read), zero-byte, truncated and non-image files
(rejected with a reason). Memory stays bounded: the file is read once, its pixel count checked
from the header before decoding, and with ``max_side`` a large photo is decoded at a reduced scale
(JPEG's DCT scaling) and resized so that its longer side is at most ``max_side``.
"""

from __future__ import annotations

import io
import math
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageRejected",
    "LoadedImage",
    "load_rgb",
    "MAX_PIXELS",
    "MAX_BYTES",
    "IMAGE_SUFFIXES",
    "ImageEntry",
    "entries_from_paths",
]

#: Largest accepted image, in pixels (a 12k x 8k photo). Larger files are rejected as bombs.
MAX_PIXELS = 100_000_000
MIN_SIDE = 8  # pixels; smaller is no photo of a face

#: Largest accepted file, in bytes (checked before reading it).
MAX_BYTES = 256 * 2**20

#: File suffixes the inventory treats as images (case-insensitive); others are recorded and skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageRejected(ValueError):
    """The file cannot be used as a photo. ``reason`` is a short machine-readable code."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo. ``rgb`` is (h, w, 3) uint8, upright; ``notes`` lists conversions done.

    ``size``: the photo's upright (width, height) in pixels; ``scale``: (sx, sy) = rgb pixels per
    photo pixel (1, 1 unless ``max_side`` reduced it): photo coordinates x map to rgb x * sx.
    """

    rgb: np.ndarray
    source_mode: str
    source_format: str
    notes: tuple[str, ...]
    size: tuple[int, int] = (0, 0)
    scale: tuple[float, float] = (1.0, 1.0)


def _to_rgb8(im: Image.Image, notes: list[str]) -> Image.Image:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = float(a.max()) if a.size else 0.0
        if mode.startswith("I;16") or top > 255:
            hi = 65535.0
        elif mode == "F" and top <= 1.0:
            hi = 1.0  # float images in [0, 1]
        else:
            hi = 255.0
        notes.append(f"{mode}->8bit")
        im = Image.fromarray(np.clip(np.round(a / hi * 255.0), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            notes.append("alpha composited on black")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if mode != "RGB":
        notes.append(f"{mode}->RGB")
        return im.convert("RGB")
    return im


def load_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    max_side: int | None = None,
    data: bytes | None = None,
) -> LoadedImage:
    """Decode ``path`` (or its bytes ``data``, already read) to an upright 8-bit RGB array, reduced
    so that its longer side is at most ``max_side`` pixels (None: full size).

    Raises:
        ImageRejected: with reason ``empty-file``, ``too-large-file``, ``not-an-image``,
            ``too-large``, ``too-small``, ``truncated`` or ``decode-error``.
    """
    path = Path(path)
    data = _checked_bytes(path, data, max_bytes)
    im, s, fmt, (w, h) = _decode(path, data, max_pixels, max_side)
    notes: list[str] = []
    source_mode = im.mode
    im, orientation = _exif_upright(im, notes)
    upright = (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # EXIF 5-8 swap the axes
    im = _to_rgb8(im, notes)
    if s < 1.0:
        target = (max(1, round(upright[0] * s)), max(1, round(upright[1] * s)))
        if im.size != target:
            im = im.resize(target, Image.Resampling.LANCZOS)
        notes.append(f"reduced to {target[0]}x{target[1]} (max_side {max_side})")
    rgb = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ImageRejected(
            path, "too-small", f"{upright[0]}x{upright[1]} pixels: a face photo needs at least {MIN_SIDE} on each side"
        )
    scale = (rgb.shape[1] / upright[0], rgb.shape[0] / upright[1])
    return LoadedImage(
        rgb=rgb, source_mode=source_mode, source_format=fmt, notes=tuple(notes), size=upright, scale=scale
    )


def _checked_bytes(path: Path, data: bytes | None, max_bytes: int) -> bytes:
    """The file's bytes (read unless given), refused before decoding when too large, empty or text."""
    if data is None:
        n = path.stat().st_size
        if n > max_bytes:
            raise ImageRejected(path, "too-large-file", f"{n} bytes > {max_bytes} (not read)")
        data = path.read_bytes()
    elif len(data) > max_bytes:
        raise ImageRejected(path, "too-large-file", f"{len(data)} bytes > {max_bytes}")
    if not data:
        raise ImageRejected(path, "empty-file", "0 bytes")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"{")):
        raise ImageRejected(path, "not-an-image", "the file is HTML/XML/JSON text")
    return data


def _decode(
    path: Path, data: bytes, max_pixels: int, max_side: int | None
) -> tuple[Image.Image, float, str, tuple[int, int]]:
    """The decoded image (as stored: not yet upright), the scale ``max_side`` asks for (<= 1), the
    file's format and its stored size (the header's, before any reduced decoding). The header's
    size is checked before any pixel is decoded, and every decoder failure becomes an
    :class:`ImageRejected` naming the file."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        # PIL's own bomb check follows leam's limit (it warns above it; the warning is an error here)
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data))
            fmt = im.format or "?"
            w, h = im.size
            if w * h > max_pixels:
                raise ImageRejected(path, "too-large", f"{w}x{h} = {w * h} pixels > {max_pixels}")
            s = min(1.0, max_side / max(w, h)) if max_side else 1.0
            if s < 1.0:  # JPEG: decode at 1/2, 1/4 or 1/8 scale, no smaller than the target
                im.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
            im.load()
        return im, s, fmt, (w, h)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL's message quotes its own limit (twice leam's for the error): say leam's
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{claimed.group(1)} pixels" if claimed else "the header's size"
        raise ImageRejected(path, "too-large", f"{size} > {max_pixels} (not decoded)") from None
    except UnidentifiedImageError:
        raise ImageRejected(path, "not-an-image", "no image format recognised") from None
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "decode-error"
        raise ImageRejected(path, reason, str(e)) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of the file
        raise ImageRejected(path, "decode-error", f"{type(e).__name__}: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _exif_upright(im: Image.Image, notes: list[str]) -> tuple[Image.Image, int]:
    """The image turned upright by its EXIF orientation, and that orientation (1 when none or
    invalid: an invalid value is noted and ignored)."""
    orientation = im.getexif().get(0x0112, 1)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        notes.append(f"exif-orientation {orientation} applied")
        return ImageOps.exif_transpose(im), orientation
    if orientation not in (1, None):
        notes.append(f"exif-orientation {orientation!r} is not a valid value (1-8): ignored")
    return im, 1


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@dataclass(frozen=True)
class ImageEntry:
    identity: str
    image: str
    path: str


def entries_from_paths(paths) -> list[ImageEntry]:
    """``.../{identity}/{image}`` paths -> :class:`ImageEntry` list sorted by (identity, image); the
    identity in Unicode NFC, as :func:`leam.stages.dataset.list_inputs` names it."""
    out = [ImageEntry(unicodedata.normalize("NFC", Path(p).parent.name), Path(p).name, str(p)) for p in paths]
    return sorted(out, key=lambda e: (e.identity, e.image))
