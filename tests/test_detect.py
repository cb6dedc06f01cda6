"""Detect stage: safe image loading (load_rgb) and face detection / filtering / duplicates.

Everything runs on real files: the 7 sample photos of the face_recognition 1.3.0 sdist
(``sample_raw``), and files written here by PIL/numpy in ``tmp_path`` (broken, odd-mode, rotated).
The dlib detector is real; it is built once per module where it is called directly.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import stage_options
from PIL import Image

from leam.core.images import MAX_PIXELS, ImageEntry, ImageRejected, load_rgb
from leam.core.tables import FACES_SCHEMA
from leam.stages.dataset import list_images
from leam.stages.detect import Detection, FaceDetector, detect_images, detect_shard, find_duplicates

SAMPLE_NAMES = {
    ("biden", "biden.jpg"),
    ("obama", "32bit.png"),
    ("obama", "obama.jpg"),
    ("obama", "obama2.jpg"),
    ("obama", "obama3.jpg"),
    ("obama", "obama_partial_face.jpg"),
    ("obama", "obama_partial_face2.jpg"),
}


# --------------------------------------------------------------------------------------------
# helpers


def _rejected(path, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        load_rgb(path, **kw)
    assert info.value.path == str(path)
    return info.value


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` (8-bit grey) but holds almost no pixel data.

    Costs a few hundred bytes whatever the claimed size: the shape of a decompression bomb.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _rows(table) -> dict[tuple[str, str], dict]:
    rows = table.to_pylist()
    keyed = {(r["identity"], r["image"]): r for r in rows}
    assert len(keyed) == len(rows), "one row per (identity, image)"
    return keyed


def _code(reason: str) -> str:
    return reason.split(":", 1)[0]


# --------------------------------------------------------------------------------------------
# 1. image hygiene: load_rgb


def test_empty_file_is_rejected(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert _rejected(p).reason == "empty-file"


@pytest.mark.parametrize(
    "text",
    [
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n",
        "\n   <html><body>Access denied</body></html>",
        "\ufeff<!doctype html><html><body>captcha</body></html>",  # UTF-8 BOM before the markup
        '<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
        '{"error": "rate limited"}',
    ],
    ids=["doctype", "html-leading-space", "html-bom", "xml", "json"],
)
def test_text_saved_as_jpg_is_not_an_image(tmp_path, text):
    p = tmp_path / "photo.jpg"
    p.write_text(text, encoding="utf-8")
    assert _rejected(p).reason == "not-an-image"


def test_random_bytes_are_not_an_image(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(np.random.default_rng(1).bytes(4096))
    assert _rejected(p).reason == "not-an-image"


@pytest.mark.parametrize("image", ["obama.jpg", "32bit.png"])
def test_half_file_is_truncated(sample_raw, tmp_path, image):
    data = (sample_raw / "obama" / image).read_bytes()
    p = tmp_path / f"half_{image}"
    p.write_bytes(data[: len(data) // 2])
    # PIL (LOAD_TRUNCATED_IMAGES False) opens the header, then load() raises
    # OSError("image file is truncated ..."): leam must call that "truncated", not "decode-error".
    err = _rejected(p)
    assert err.reason == "truncated", err
    assert "truncated" in err.detail.lower()


def test_corrupt_pixel_data_is_decode_error(tmp_path):
    p = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
    data = bytearray(p.read_bytes())
    i = data.find(b"IDAT")
    data[i + 4 : i + 6] = b"\x00\x00"  # break the zlib stream header, keep the file length
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    assert _rejected(bad).reason == "decode-error"


@pytest.mark.parametrize("size", [(1, 1), (4, 7)])
def test_too_small_to_be_a_photo(tmp_path, size):
    """#12 case 12: a 1x1 image used to say ``decode-error: unusable shape``."""
    p = tmp_path / "tiny.png"
    Image.new("RGB", size, (10, 20, 30)).save(p)
    err = _rejected(p)
    assert (err.reason, err.detail) == (
        "too-small",
        f"{size[0]}x{size[1]} pixels: a face photo needs at least 8 on each side",
    )


@pytest.mark.parametrize("value", [0, 9, 2])
def test_exif_orientation_notes(tmp_path, value):
    """#12 case 12: orientation 0 (invalid) used to be noted as "exif-orientation 0 applied"."""
    p = tmp_path / "o.jpg"
    im = Image.fromarray(np.tile(np.arange(30, dtype=np.uint8)[None, :, None], (20, 1, 3)))
    exif = Image.Exif()
    exif[0x0112] = value
    im.save(p, exif=exif)
    got = load_rgb(p)
    if value == 2:  # mirrored: applied
        assert got.notes[0] == "exif-orientation 2 applied" and got.rgb[0, 0, 0] > got.rgb[0, -1, 0]
    else:
        assert got.notes[0] == f"exif-orientation {value} is not a valid value (1-8): ignored"
        assert got.rgb[0, 0, 0] < got.rgb[0, -1, 0] and got.size == (30, 20)


def test_max_pixels_limit(tmp_path):
    p = tmp_path / "small.png"
    Image.fromarray(np.full((100, 100, 3), 77, np.uint8)).save(p)
    err = _rejected(p, max_pixels=100 * 100 - 1)
    assert err.reason == "too-large"
    assert "10000" in err.detail
    # exactly at the limit is accepted
    assert load_rgb(p, max_pixels=100 * 100).rgb.shape == (100, 100, 3)


@pytest.mark.parametrize("size", [(20_000, 20_000), (65_535, 65_535)])
def test_decompression_bomb_header_is_too_large(tmp_path, size):
    """A few hundred bytes that claim 400M / 4.3G pixels: rejected before any pixel is decoded."""
    p = _png_header_only(tmp_path / "bomb.png", *size)
    assert p.stat().st_size < 1000
    assert size[0] * size[1] > MAX_PIXELS
    err = _rejected(p)
    # leam's limit, not PIL's (twice it): #12 case 12
    assert (err.reason, err.detail) == ("too-large", f"{size[0] * size[1]} pixels > {MAX_PIXELS} (not decoded)")


def test_header_below_leam_limit_is_not_too_large(tmp_path):
    """A header well below MAX_PIXELS and PIL's own limit is decoded (here: found truncated)."""
    p = _png_header_only(tmp_path / "short.png", 4000, 3000)
    assert _rejected(p).reason == "truncated"


@pytest.mark.parametrize("max_pixels", [MAX_PIXELS, 10**9])
def test_twelve_by_eight_k_header_is_within_the_limit(tmp_path, max_pixels):
    """Regression: PIL's own bomb limit (89.5 M pixels) used to reject these before leam's check."""
    p = _png_header_only(tmp_path / "12kx8k.png", 12_000, 8_000)
    assert max_pixels >= 12_000 * 8_000
    # the header is accepted; the (missing) pixel data then makes it "truncated"
    assert _rejected(p, max_pixels=max_pixels).reason == "truncated"


def test_cmyk_jpeg_is_converted_like_pil(tmp_path):
    rng = np.random.default_rng(3)
    cmyk = Image.fromarray(rng.integers(0, 256, (40, 60, 4), dtype=np.uint8), "CMYK")
    cmyk.paste((255, 0, 0, 0), (0, 0, 20, 20))  # pure cyan block
    cmyk.paste((0, 0, 0, 0), (20, 0, 40, 20))  # no ink: white block
    cmyk.paste((0, 0, 0, 255), (40, 0, 60, 20))  # full black ink
    p = tmp_path / "cmyk.jpg"
    cmyk.save(p, quality=100)
    with Image.open(p) as im:
        assert im.mode == "CMYK"
        ref = np.asarray(im.convert("RGB"))
    got = load_rgb(p)
    assert got.source_mode == "CMYK"
    assert got.rgb.dtype == np.uint8 and got.rgb.shape == (40, 60, 3)
    np.testing.assert_array_equal(got.rgb, ref)
    # and the colours are right, not just consistent (JPEG tolerance)
    np.testing.assert_allclose(got.rgb[10, 10], (0, 255, 255), atol=8)
    np.testing.assert_allclose(got.rgb[10, 30], (255, 255, 255), atol=8)
    np.testing.assert_allclose(got.rgb[10, 50], (0, 0, 0), atol=8)


def test_16bit_grey_png_is_scaled_to_8bit(tmp_path):
    v = np.array(
        [[0, 1, 128, 129], [255, 256, 257, 1000], [32767, 32768, 65279, 65280], [65534, 65535, 12345, 54321]],
        dtype=np.uint16,
    )
    v = np.kron(v, np.ones((4, 4), dtype=np.uint16))  # 16x16: above the 8 px minimum
    p = tmp_path / "grey16.png"
    Image.fromarray(v).save(p)
    with Image.open(p) as im:
        assert im.mode == "I;16"
    got = load_rgb(p)
    assert got.source_mode == "I;16"
    expected = np.round(v.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    assert got.rgb.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(got.rgb[..., c], expected)


def test_dark_16bit_png_is_not_mistaken_for_8bit(tmp_path):
    """All values <= 255 in a 16-bit file are still 16-bit values: they scale to ~0, not to 0..255."""
    v = np.kron(np.array([[0, 100], [200, 255]], dtype=np.uint16), np.ones((8, 8), dtype=np.uint16))
    p = tmp_path / "dark16.png"
    Image.fromarray(v).save(p)
    got = load_rgb(p)
    assert got.rgb.max() <= 1


def test_greyscale_png_becomes_three_equal_channels(tmp_path):
    a = np.random.default_rng(5).integers(0, 256, (40, 30), dtype=np.uint8)
    p = tmp_path / "grey.png"
    Image.fromarray(a, "L").save(p)
    got = load_rgb(p)
    assert got.source_mode == "L" and got.rgb.shape == (40, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(got.rgb[..., c], a)


def test_float_tiff_in_unit_range_is_scaled_to_8bit(tmp_path):
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    p = tmp_path / "float.tif"
    Image.fromarray(a, "F").save(p)
    got = load_rgb(p).rgb
    np.testing.assert_array_equal(got[..., 0], np.round(a * 255).astype(np.uint8))


def test_palette_png_equals_pil_rgb(tmp_path):
    src = Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    p = tmp_path / "palette.png"
    src.quantize(16).save(p)
    with Image.open(p) as im:
        assert im.mode == "P" and "transparency" not in im.info
        ref = np.asarray(im.convert("RGB"))
    got = load_rgb(p)
    assert got.source_mode == "P"
    np.testing.assert_array_equal(got.rgb, ref)
    assert len(np.unique(got.rgb.reshape(-1, 3), axis=0)) <= 16


def test_rgba_is_composited_on_black(tmp_path):
    a = np.zeros((20, 20, 4), np.uint8)
    a[...] = (200, 100, 50, 255)
    a[5, 5, 3] = 128  # half transparent
    a[6, 6, 3] = 0  # fully transparent (its colour must not leak)
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    got = load_rgb(p)
    assert got.source_mode == "RGBA"
    assert got.rgb.shape == (20, 20, 3)
    np.testing.assert_array_equal(got.rgb[0, 0], (200, 100, 50))
    np.testing.assert_allclose(got.rgb[5, 5].astype(int), np.array([200, 100, 50]) * 128 / 255, atol=1)
    np.testing.assert_array_equal(got.rgb[6, 6], (0, 0, 0))
    assert any("alpha" in n for n in got.notes)


def test_palette_with_transparency_is_composited_on_black(tmp_path):
    im = Image.new("P", (16, 16), 1)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    im.putpixel((3, 3), 2)
    p = tmp_path / "ptrans.png"
    im.save(p, transparency=2)
    got = load_rgb(p)
    np.testing.assert_array_equal(got.rgb[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(got.rgb[3, 3], (0, 0, 0))  # transparent green -> black


def test_opaque_rgba_sample_equals_its_rgb_twin(sample_raw):
    """32bit.png is obama2.jpg re-encoded as RGBA with alpha 255: decoded pixels ~ equal."""
    png = load_rgb(sample_raw / "obama" / "32bit.png")
    jpg = load_rgb(sample_raw / "obama" / "obama2.jpg")
    assert png.source_mode == "RGBA" and png.rgb.shape == jpg.rgb.shape == (1200, 626, 3)
    assert np.abs(png.rgb.astype(int) - jpg.rgb.astype(int)).mean() < 5


@pytest.mark.parametrize(
    "orientation, stored_as",
    [
        (6, Image.Transpose.ROTATE_90),  # viewer must turn 90 deg clockwise
        (8, Image.Transpose.ROTATE_270),  # viewer must turn 90 deg counter-clockwise
        (3, Image.Transpose.ROTATE_180),
    ],
)
def test_exif_orientation_is_applied(sample_raw, tmp_path, orientation, stored_as):
    with Image.open(sample_raw / "obama" / "obama.jpg") as im:
        upright = im.convert("RGB").resize((240, 300), Image.Resampling.LANCZOS)
    ref_path = tmp_path / "upright.jpg"
    upright.save(ref_path, quality=95)
    expected = _rgb(ref_path).astype(int)

    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"orient{orientation}.jpg"
    upright.transpose(stored_as).save(p, quality=95, exif=exif.tobytes())
    with Image.open(p) as im:
        assert im.getexif()[0x0112] == orientation
        assert im.size == ((300, 240) if orientation in (6, 8) else (240, 300))

    got = load_rgb(p)
    assert got.rgb.shape == (300, 240, 3)  # height, width of the upright photo
    diff = np.abs(got.rgb.astype(int) - expected).mean()
    assert diff < 4, diff  # equal within JPEG noise
    flipped = np.abs(got.rgb[::-1, ::-1].astype(int) - expected).mean()
    assert flipped > 10 * max(diff, 1)  # and not upside down
    assert any("orientation" in n for n in got.notes)


def test_plain_photo_loads_unchanged(sample_raw):
    p = sample_raw / "obama" / "obama.jpg"
    got = load_rgb(p)
    assert got.source_format == "JPEG" and got.source_mode == "RGB" and got.notes == ()
    assert got.rgb.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got.rgb, _rgb(p))


# --------------------------------------------------------------------------------------------
# 2. detection on the real sample photos


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def sample_faces(sample_entries, tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "faces.parquet"
    table = detect_shard(sample_entries, str(out), options=stage_options("detect"))
    return table, out


def test_sample_statuses(sample_faces):
    table, _ = sample_faces
    assert table.num_rows == 7
    rows = _rows(table)
    assert set(rows) == SAMPLE_NAMES
    dups = [k for k, r in rows.items() if r["status"] == "duplicate"]
    assert dups == [("obama", "32bit.png")]
    dup = rows["obama", "32bit.png"]
    assert dup["duplicate_of"] == "obama2.jpg"
    assert dup["reason"].startswith("near")
    for key, r in rows.items():
        assert r["n_faces"] == 1, key
        if key != ("obama", "32bit.png"):
            assert r["status"] == "ok", (key, r["reason"])
            assert r["reason"] == "" and r["duplicate_of"] is None, key
    assert rows["obama", "32bit.png"]["source_mode"] == "RGBA"
    assert (rows["obama", "32bit.png"]["width"], rows["obama", "32bit.png"]["height"]) == (626, 1200)


def test_sample_rows_describe_the_files(sample_faces, sample_raw):
    table, _ = sample_faces
    for r in table.to_pylist():
        path = sample_raw / r["identity"] / r["image"]
        assert Path(r["path"]) == path
        data = path.read_bytes()
        assert r["bytes"] == len(data)
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        with Image.open(path) as im:
            assert (r["width"], r["height"]) == im.size


def test_sample_landmarks_and_boxes(sample_faces):
    table, _ = sample_faces
    for r in table.to_pylist():
        key = (r["identity"], r["image"])
        w, h = r["width"], r["height"]
        assert r["score"] is not None and r["score"] > 0, key
        pts = np.asarray(r["landmarks"], dtype=np.float64)
        assert pts.shape == (136,), key
        pts = pts.reshape(68, 2)  # x0, y0, x1, y1, ...
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        if "partial" in r["image"]:
            # a face cut by the border: landmarks may run a little past it
            assert (lo > -0.1 * np.array([w, h])).all() and (hi < 1.1 * np.array([w, h])).all(), key
        else:
            assert (lo >= 0).all() and hi[0] < w and hi[1] < h, key
        # anatomy: image-left eye corner left of the other, nose tip between eyes and chin
        assert pts[36, 0] < pts[45, 0], key
        eyes_y = (pts[36, 1] + pts[45, 1]) / 2
        assert eyes_y < pts[30, 1] < pts[8, 1], key
        # box and landmarks describe the same face
        left, top, right, bottom = r["box_left"], r["box_top"], r["box_right"], r["box_bottom"]
        assert left < right and top < bottom, key
        cx, cy = (lo + hi) / 2
        assert left < cx < right and top < cy < bottom, key
        bw, lw = right - left, hi[0] - lo[0]
        assert 0.6 < bw / lw < 1.6, key
        ix = max(0.0, min(right, hi[0]) - max(left, lo[0]))
        iy = max(0.0, min(bottom, hi[1]) - max(top, lo[1]))
        assert ix * iy > 0.5 * (right - left) * (bottom - top), key


def test_sample_parquet_round_trip(sample_faces):
    table, out = sample_faces
    assert table.schema.equals(FACES_SCHEMA)
    back = pq.read_table(out)
    assert back.schema.equals(FACES_SCHEMA)
    assert back.equals(table)


# --------------------------------------------------------------------------------------------
# 3. bad files are rejected with a reason and the run goes on


def test_bad_files_are_rejected_and_the_run_goes_on(sample_raw, sample_faces, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(sample_raw, raw)
    (raw / "obama" / "empty.jpg").write_bytes(b"")
    (raw / "obama" / "x.jpg").write_text(
        "<!DOCTYPE html>\n<html><body><h1>403 Forbidden</h1></body></html>\n", encoding="utf-8"
    )
    Image.new("RGB", (300, 300), (128, 128, 128)).save(raw / "biden" / "grey.png")
    with Image.open(sample_raw / "obama" / "obama.jpg") as a, Image.open(sample_raw / "biden" / "biden.jpg") as b:
        height = 500
        a = a.convert("RGB").resize((round(a.width * height / a.height), height), Image.Resampling.LANCZOS)
        b = b.convert("RGB").resize((round(b.width * height / b.height), height), Image.Resampling.LANCZOS)
        two = Image.new("RGB", (a.width + b.width, height))
        two.paste(a, (0, 0))
        two.paste(b, (a.width, 0))
    two.save(raw / "biden" / "two_faces.jpg", quality=92)

    entries = list_images(raw)
    assert len(entries) == 11
    table = detect_shard(entries, str(tmp_path / "faces.parquet"), options=stage_options("detect"))
    assert table.num_rows == 11
    rows = _rows(table)

    expected = {
        ("obama", "empty.jpg"): "empty-file",
        ("obama", "x.jpg"): "not-an-image",
        ("biden", "grey.png"): "no-face",
        ("biden", "two_faces.jpg"): "multiple-faces",
    }
    for key, code in expected.items():
        r = rows[key]
        assert r["status"] == "rejected", (key, r)
        assert _code(r["reason"]) == code, (key, r["reason"])
        assert r["duplicate_of"] is None
        assert r["landmarks"] is None or code == "multiple-faces"
    assert rows["biden", "grey.png"]["n_faces"] == 0
    assert rows["biden", "two_faces.jpg"]["n_faces"] == 2
    assert rows["obama", "empty.jpg"]["bytes"] == 0

    # the sample photos come out exactly as without the bad files
    before = _rows(sample_faces[0])
    for key in SAMPLE_NAMES:
        for col in ("status", "reason", "duplicate_of", "n_faces", "box_left", "box_top", "landmarks"):
            assert rows[key][col] == before[key][col], (key, col)
    assert sum(r["status"] == "ok" for r in rows.values()) == sum(r["status"] == "ok" for r in before.values()) == 6


def test_detect_images_never_raises(detector, sample_raw, tmp_path):
    """Unreadable, truncated, bomb and corrupt files become rejected rows next to a good photo."""
    half = tmp_path / "half.jpg"
    data = (sample_raw / "obama" / "obama.jpg").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    bomb = _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    small = tmp_path / "small.jpg"
    with Image.open(sample_raw / "obama" / "obama.jpg") as im:
        im.resize((364, 455), Image.Resampling.LANCZOS).save(small, quality=95)
    entries = [
        ImageEntry("x", "missing.jpg", str(tmp_path / "missing.jpg")),
        ImageEntry("x", "half.jpg", str(half)),
        ImageEntry("x", "bomb.png", str(bomb)),
        ImageEntry("x", "small.jpg", str(small)),
    ]
    dets = detect_images(entries, detector)
    assert [d.image for d in dets] == ["missing.jpg", "half.jpg", "bomb.png", "small.jpg"]
    got = {d.image: (d.status, _code(d.reason)) for d in dets}
    assert got == {
        "missing.jpg": ("rejected", "unreadable"),
        "half.jpg": ("rejected", "truncated"),
        "bomb.png": ("rejected", "too-large"),
        "small.jpg": ("ok", ""),
    }
    ok = dets[3]
    assert ok.n_faces == 1 and ok.landmarks.shape == (68, 2) and ok.chip.shape == (64, 64)
    assert (ok.width, ok.height) == (364, 455)


# --------------------------------------------------------------------------------------------
# 4. duplicates among real photos


def test_exact_and_near_duplicates_keep_rule(sample_raw, tmp_path):
    obama = tmp_path / "raw" / "obama"
    obama.mkdir(parents=True)
    for name in ("obama3.jpg", "obama.jpg"):
        shutil.copyfile(sample_raw / "obama" / name, obama / name)
    # a byte copy: same pixels and size, so the first name is kept -> a_copy.jpg
    shutil.copyfile(obama / "obama3.jpg", obama / "a_copy.jpg")
    # an upscaled re-encode of obama.jpg: more pixels (and a bigger file) -> it is kept
    with Image.open(obama / "obama.jpg") as im:
        im.resize((round(im.width * 1.25), round(im.height * 1.25)), Image.Resampling.LANCZOS).save(
            obama / "obama_big.png"
        )
    assert (obama / "obama_big.png").stat().st_size > (obama / "obama.jpg").stat().st_size

    entries = list_images(tmp_path / "raw")[::-1]  # the rule, not the input order, decides
    table = detect_shard(entries, str(tmp_path / "faces.parquet"), options=stage_options("detect"))
    rows = {r["image"]: r for r in table.to_pylist()}
    assert set(rows) == {"a_copy.jpg", "obama.jpg", "obama3.jpg", "obama_big.png"}

    assert rows["a_copy.jpg"]["status"] == "ok"
    assert rows["obama3.jpg"]["status"] == "duplicate"
    assert rows["obama3.jpg"]["duplicate_of"] == "a_copy.jpg"
    assert rows["obama3.jpg"]["reason"].startswith("exact"), rows["obama3.jpg"]["reason"]
    assert rows["obama3.jpg"]["sha256"] == rows["a_copy.jpg"]["sha256"]

    assert rows["obama_big.png"]["status"] == "ok"
    assert rows["obama.jpg"]["status"] == "duplicate"
    assert rows["obama.jpg"]["duplicate_of"] == "obama_big.png"
    assert rows["obama.jpg"]["reason"].startswith("near")
    # duplicates keep their detection (they are only not used twice)
    assert all(r["n_faces"] == 1 and r["landmarks"] is not None for r in rows.values())


# --------------------------------------------------------------------------------------------
# 5. find_duplicates keep rule, synthetic


def _det(identity, image, *, w=100, h=100, nbytes=1000, sha=None, chip=0.0, status="ok"):
    base = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) % 200
    return Detection(
        identity=identity,
        image=image,
        path=f"/raw/{identity}/{image}",
        bytes=nbytes,
        sha256=sha or f"sha-{identity}-{image}",
        width=w,
        height=h,
        n_faces=1,
        chip=base + np.float32(chip),
        status=status,
        reason="no-face" if status == "rejected" else "",
    )


def _state(dets):
    return {(d.identity, d.image): (d.status, d.duplicate_of, _code(d.reason)) for d in dets}


def test_find_duplicates_most_pixels_then_smallest_file_then_name():
    dets = [
        # near group in "a": c.jpg has the most pixels although its file is the biggest
        _det("a", "a.jpg", w=100, h=100, nbytes=10, chip=0.0),
        _det("a", "c.jpg", w=200, h=200, nbytes=9000, chip=1.0),
        _det("a", "b.jpg", w=200, h=100, nbytes=5, chip=2.0),
        # near group in "b": equal pixels -> smallest file wins over the first name
        _det("b", "a.jpg", w=100, h=100, nbytes=500, chip=0.0),
        _det("b", "z.jpg", w=100, h=100, nbytes=400, chip=3.0),
        # near group in "c": equal pixels and bytes -> first name, whatever the input order
        _det("c", "n.jpg", w=100, h=100, nbytes=400, chip=0.0),
        _det("c", "m.jpg", w=100, h=100, nbytes=400, chip=0.5),
    ]
    find_duplicates(dets, near_duplicate_mad=6.0)
    assert _state(dets) == {
        ("a", "c.jpg"): ("ok", None, ""),
        ("a", "a.jpg"): ("duplicate", "c.jpg", "near"),
        ("a", "b.jpg"): ("duplicate", "c.jpg", "near"),
        ("b", "z.jpg"): ("ok", None, ""),
        ("b", "a.jpg"): ("duplicate", "z.jpg", "near"),
        ("c", "m.jpg"): ("ok", None, ""),
        ("c", "n.jpg"): ("duplicate", "m.jpg", "near"),
    }


def test_find_duplicates_exact_by_hash_and_near_threshold():
    dets = [
        # same bytes -> exact duplicate even when the chips are far apart
        _det("p", "x.jpg", sha="same", chip=0.0),
        _det("p", "y.jpg", sha="same", chip=100.0),
        # chips exactly at the threshold (6.0) -> duplicate; just above -> distinct photo
        _det("q", "base.jpg", w=300, h=300, chip=0.0),
        _det("q", "at.jpg", chip=6.0),
        _det("q", "above.jpg", chip=-6.5),
        # identical chips in another identity are not duplicates across identities
        _det("r", "base.jpg", w=300, h=300, chip=0.0),
        # rejected rows are never compared
        _det("q", "rejected.jpg", w=1000, h=1000, chip=0.0, status="rejected"),
    ]
    find_duplicates(dets, near_duplicate_mad=6.0)
    st = _state(dets)
    assert st["p", "x.jpg"] == ("ok", None, "")
    assert st["p", "y.jpg"] == ("duplicate", "x.jpg", "exact")
    assert st["q", "base.jpg"] == ("ok", None, "")
    assert st["q", "at.jpg"] == ("duplicate", "base.jpg", "near")
    assert st["q", "above.jpg"] == ("ok", None, "")
    assert st["r", "base.jpg"] == ("ok", None, "")
    assert st["q", "rejected.jpg"] == ("rejected", None, "no-face")
    near = next(d for d in dets if d.image == "at.jpg")
    assert "6.00" in near.reason


def test_find_duplicates_distinct_photos_untouched():
    dets = [_det("a", f"{i}.jpg", chip=10.0 * i) for i in range(4)]
    find_duplicates(dets, near_duplicate_mad=6.0)
    assert all(d.status == "ok" and d.duplicate_of is None for d in dets)


DETECT_CHILD = """
import json, sys
from leam.core.images import ImageEntry
from leam.stages.detect import FaceDetector, detect_images
d = detect_images([ImageEntry("x", "big.jpg", sys.argv[1])], FaceDetector(), max_side=int(sys.argv[2]))[0]
print(json.dumps({"status": d.status, "reason": d.reason, "size": [d.width, d.height], "box": d.box,
                  "landmarks": None if d.landmarks is None else d.landmarks.tolist(),
                  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over fork + exec)
                  "rss_mb": int(next(line for line in open("/proc/self/status")
                                     if line.startswith("VmHWM")).split()[1]) / 1024}))
"""


def _detect_in_child(path, max_side=2500) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", DETECT_CHILD, str(path), str(max_side)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_100_megapixel_photo_is_detected_in_bounded_memory(sample_raw, tmp_path, monkeypatch):
    """A 10 000 x 10 000 JPEG (the largest allowed) with obama's face: found, in the photo's own
    pixels, where detecting on a copy reduced by hand finds it; the process's peak RSS stays far
    below the 4.8 GB it took when the photo was decoded (and warped) at full size."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # this test's own PIL calls
    face = Image.open(sample_raw / "obama" / "obama.jpg").convert("RGB")
    big = face.resize((10_000, 10_000 * face.height // face.width), Image.BILINEAR)
    canvas = Image.new("RGB", (10_000, 10_000), (90, 90, 90))
    canvas.paste(big, (0, 0))
    canvas.save(tmp_path / "big.jpg", quality=80)
    del big, canvas
    got = _detect_in_child(tmp_path / "big.jpg")
    assert got["status"] == "ok" and got["size"] == [10_000, 10_000], got
    assert got["rss_mb"] < 800, got["rss_mb"]
    # the same photo reduced by hand to 2500 px: landmarks x 4 agree with the reported ones
    small = tmp_path / "small.jpg"
    Image.open(tmp_path / "big.jpg").resize((2500, 2500), Image.LANCZOS).save(small, quality=95)
    ref = _detect_in_child(small)
    lm, lm_ref = np.array(got["landmarks"]), np.array(ref["landmarks"]) * 4
    face_size = np.ptp(lm_ref[:, 0])
    # one pixel of the reduced copy is 4 photo pixels; JPEG's 1/4-scale decoding differs a little
    # from a full decode then resize, so the 68-point fit moves by a few reduced pixels at most
    assert np.abs(np.array(got["box"]) - np.array(ref["box"]) * 4).max() <= 8, (got["box"], ref["box"])
    assert np.abs(lm - lm_ref).mean() < 0.005 * face_size, np.abs(lm - lm_ref).mean() / face_size


def test_a_huge_non_image_is_rejected_without_being_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(2**30)  # 1 GiB, sparse
    got = _detect_in_child(path)
    assert got["status"] == "rejected" and got["reason"].startswith("too-large-file"), got
    assert str(2**30) in got["reason"] and got["rss_mb"] < 400, got


def test_inputs_that_are_no_photos_are_listed_with_their_reason(tmp_path):
    """#12 cases 1 and 12: braces, backslashes, dangling links, FIFOs, sub-folders and loose files
    used to be skipped without a row (or, braces, to stop Snakemake); each now has its reason and a
    rejected row, and the usable photos are listed as before."""
    import os

    from leam.stages.dataset import list_inputs

    raw = tmp_path / "raw"
    for folder, name in (("a{x}", "p.jpg"), ("b", "q.jpg"), ("b", "r{1}.jpg"), ("c\\d", "z.jpg")):
        (raw / folder).mkdir(parents=True, exist_ok=True)
        (raw / folder / name).write_bytes(b"x")
    os.symlink(tmp_path / "nowhere", raw / "b" / "dangling.jpg")
    os.symlink(raw / "b" / "q.jpg", raw / "b" / "link.jpg")  # a link to a file is a file
    os.mkfifo(raw / "b" / "fifo.jpg")
    (raw / "b" / "sub").mkdir()
    (raw / "flat.jpg").write_bytes(b"x")
    (raw / "MANIFEST.sha256").write_text("")
    (raw / "b" / ".hidden").write_bytes(b"x")
    entries, unusable = list_inputs(raw)
    HIDDEN = "skipped-hidden: a name starting with '.' (.DS_Store, macOS ._ files, .git) is not a photo of the study"
    assert [(e.identity, e.image) for e in entries] == [("b", "link.jpg"), ("b", "q.jpg")]
    assert {(u.identity, u.image): u.reason for u in unusable} == {
        (
            "a{x}",
            "p.jpg",
        ): "unusable-name: folder '{' or '}' in the name (Snakemake reads braces as wildcards): rename it",
        (
            "b",
            "r{1}.jpg",
        ): "unusable-name: file '{' or '}' in the name (Snakemake reads braces as wildcards): rename it",
        ("c\\d", "z.jpg"): "unusable-name: folder '\\' in the name: rename it",
        ("b", "dangling.jpg"): "not-a-file: a symbolic link to nothing",
        ("b", "fifo.jpg"): "not-a-file: a FIFO",
        ("b", ".hidden"): HIDDEN,  # #21: every entry gets a row, hidden ones included
        ("b", "sub"): "not-a-file: a folder (photos go one level deep: {identity}/{image})",
        ("", "flat.jpg"): f"not-in-a-person-folder: photos go in {raw}/{{identity}}/{{image}}",
    }
    table = detect_shard(
        [],
        str(tmp_path / "faces.parquet"),
        options=stage_options("detect"),
        unusable=[(u.identity, u.image, u.path, u.reason) for u in unusable],
    )
    rows = table.to_pylist()
    assert [(r["identity"], r["image"]) for r in rows] == sorted((u.identity, u.image) for u in unusable)
    assert all(r["status"] == "rejected" and r["bytes"] == 0 for r in rows)


def test_an_input_folder_without_photos_is_refused(tmp_path, monkeypatch):
    """#12 case 4: a missing input.dir, or a flat folder of photos, used to run as an empty study."""
    from leam.stages.dataset import input_problem

    monkeypatch.chdir(tmp_path)
    assert input_problem("data/doesnotexist") == (
        f"input.dir 'data/doesnotexist' does not exist (in {tmp_path}): put the photos in "
        "data/doesnotexist/{identity}/{image}, one folder per person, or set input.sample"
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"{i}.jpg").write_bytes(b"x")
    assert input_problem(flat) == (
        f"input.dir '{flat}' holds no file in a person's folder; 3 file(s) lie directly "
        f"in it: put the photos in {flat}/{{identity}}/{{image}}, one folder per person"
    )
    (flat / "ann").mkdir()
    (flat / "ann" / "a.jpg").write_bytes(b"x")
    assert input_problem(flat) is None


def test_names_that_print_alike_are_one_person_and_two_such_folders_an_error(tmp_path):
    """#21 case 4: folders 'José' in NFC and in NFD became two identities, their photos of one person
    different-identity pairs, without a word."""
    import unicodedata

    import pytest

    from leam.stages.dataset import InputError, entries_from_paths, input_problem, list_inputs

    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert nfc != nfd
    (tmp_path / "raw" / nfd).mkdir(parents=True)
    (tmp_path / "raw" / nfd / "a.jpg").write_bytes(b"x")
    entries, _ = list_inputs(tmp_path / "raw")
    assert [e.identity for e in entries] == [nfc]  # the NFD folder's photos belong to the NFC name
    assert [e.identity for e in entries_from_paths([e.path for e in entries])] == [nfc]
    (tmp_path / "raw" / nfc).mkdir()
    (tmp_path / "raw" / nfc / "b.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="are one name written in two Unicode forms") as e:
        list_inputs(tmp_path / "raw")
    assert nfc in str(e.value) and nfd in str(e.value)
    with pytest.raises(InputError):
        input_problem(tmp_path / "raw")
