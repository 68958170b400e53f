"""Every kind of bad input the app can get, driven through the Workbench (the app's logic)
on a session that already has masks. Each one must give a message a user can act on, leave
the existing masks exactly as they were, and leave the session working; inputs the app
accepts (16-bit, grayscale, alpha, palette, CMYK, EXIF-rotated, animated, 1x1) must come
out right. The same through the HTTP API is in test_ui_client.py."""

import json
import pickle
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGES
from PIL import Image
from pycocotools import mask as mask_utils

from annotator.app.workbench import Workbench, WorkbenchError
from annotator.limits import Limits
from annotator.models.loading import load_segmenter

DOG = IMAGES / "dog.jpg"
ROOT = Path(__file__).resolve().parents[2]


def with_masks(wb, sid) -> list[dict]:
    """Open dog.jpg with two masks in the session; returns the document's records."""
    wb.open_image(sid, DOG)
    doc = wb.session(sid).doc
    h, w = doc.size
    for x0, y0, x1, y1 in ((10, 10, 120, 90), (300, 200, 500, 400)):
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        doc.add(m, label="kept")
    return doc.records()


def assert_untouched_and_working(wb, sid, records):
    """The masks are exactly as before, and the next real action works on the same image."""
    s = wb.session(sid)
    assert s.name == "dog.jpg" and s.image.shape == (534, 800, 3)
    assert s.doc.records() == records
    v = wb.click(sid, 320, 300, "positive")
    assert len(v.candidates) == 3
    wb.accept(sid, "after")
    assert len(s.doc) == len(records) + 1
    s.doc.undo()
    assert s.doc.records() == records


# -- image files the app refuses ----------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds (almost) no pixels: the shape of a
    decompression bomb, which must be refused from the header, before any decoding."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = DOG.read_bytes()
    return data[: len(data) // 3]


REFUSED_FILES = [
    ("empty.jpg", lambda: b"", r"empty \(0 bytes\)"),
    ("truncated.jpg", truncated_jpeg, r"damaged or truncated"),
    ("notes.png", lambda: b"these are my notes, not a picture\n", r"not an image"),
    ("page.jpg", lambda: b"<html><body>oops</body></html>", r"not an image"),
    (
        "bomb.png",
        lambda: png_header(100_000, 100_000),
        r"claims more than \d+ megapixels \(a decompression bomb\?\).*--max-pixels",
    ),
    ("huge.png", lambda: png_header(10_000, 6_000), r"60 megapixels; the limit is 50 megapixels.*--max-pixels"),
]


@pytest.mark.parametrize("name, content, message", REFUSED_FILES, ids=[c[0] for c in REFUSED_FILES])
def test_a_bad_image_file_is_refused_and_the_masks_stay(wb, sid, tmp_path, name, content, message):
    records = with_masks(wb, sid)
    bad = tmp_path / name
    bad.write_bytes(content())
    with pytest.raises(WorkbenchError, match=message) as e:
        wb.open_image(sid, bad)
    assert str(e.value).endswith("Nothing was changed.")
    assert "Traceback" not in str(e.value) and len(str(e.value).splitlines()) == 1
    assert_untouched_and_working(wb, sid, records)


def test_the_pixel_limit_is_configurable(tiny_checkpoint, sid):
    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    small = Workbench(segmenter, info, limits=Limits(max_pixels=400_000))  # dog.jpg is 427,200
    with pytest.raises(WorkbenchError, match=r"dog.jpg is 800x534 = 0.427 megapixels; the limit is 0.4 mega"):
        small.open_image(sid, DOG)
    with pytest.raises(WorkbenchError, match=r"800x534 pixels; the limit is 0.4 megapixels"):
        small.open_image(sid, np.zeros((534, 800, 3), np.uint8))
    small.open_image(sid, np.zeros((500, 800, 3), np.uint8), "ok.png")  # 400,000: at the limit
    assert small.session(sid).image.shape == (500, 800, 3)


# -- image files the app accepts, converted right ---------------------------------------------
def save(tmp_path, name, img: Image.Image, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_16_bit_png_keeps_its_whole_range(wb, sid, tmp_path):
    records = with_masks(wb, sid)
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0..64491
    path = save(tmp_path, "deep.png", Image.fromarray(ramp))
    assert Image.open(path).mode.startswith("I;16")
    wb.open_image(sid, path)
    got = wb.session(sid).image
    assert got.shape == (48, 64, 3) and got.dtype == np.uint8
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
    g = got[..., 0].ravel().astype(int)
    # scaled, not clipped: dark stays dark, the brightest is white, and the order is kept
    assert g[0] == 0 and g[-1] == 255 and (np.diff(g) >= 0).all() and len(np.unique(g)) > 200
    wb.open_image(sid, DOG)  # back to the first image: its masks come back untouched
    assert_untouched_and_working(wb, sid, records)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1"])
def test_grayscale_alpha_and_palette_images_show_their_colours(wb, sid, tmp_path, dog, mode):
    rgb = Image.fromarray(dog[100:228, 200:392])
    if mode == "RGBA":
        img = rgb.copy()
        img.putalpha(Image.fromarray(np.full((128, 192), 90, np.uint8)))  # half transparent
        expected = dog[100:228, 200:392]  # alpha is dropped: the colours stay
    else:
        img = rgb.convert(mode)
        expected = np.asarray(img.convert("RGB"))
    path = save(tmp_path, f"img_{mode}.png", img)
    v = wb.open_image(sid, path)
    assert np.array_equal(wb.session(sid).image, expected)
    assert np.array_equal(v.canvas, expected)
    assert len(wb.click(sid, 90, 60).candidates) == 3


def test_cmyk_jpeg_keeps_its_colours(wb, sid, tmp_path, dog):
    rgb = dog[100:300, 200:500]
    path = save(tmp_path, "print.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    assert Image.open(path).mode == "CMYK"
    wb.open_image(sid, path)
    got = wb.session(sid).image.astype(int)
    assert got.shape == rgb.shape
    assert np.abs(got - rgb).mean() < 6  # JPEG noise only; inverted or swapped inks would be > 100


def rotated_with_exif(upright: np.ndarray, path: Path, **kw) -> Path:
    """Store ``upright`` turned 90 degrees counter-clockwise with EXIF Orientation 6 (rotate
    90 clockwise to view), as phones do: a viewer shows ``upright``."""
    img = Image.fromarray(np.rot90(upright))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes(), **kw)
    return path


def test_exif_rotated_photo_masks_line_up_with_what_the_user_sees(wb, sid, tmp_path, dog):
    path = rotated_with_exif(dog, tmp_path / "phone.png")
    assert Image.open(path).size == (534, 800)  # stored sideways
    v = wb.open_image(sid, path)
    assert v.canvas.shape == dog.shape and np.array_equal(wb.session(sid).image, dog)
    # a click where the user sees the dog gives the same mask as on the upright photo
    wb.click(sid, 300, 250)
    rotated_mask = wb.session(sid).prompt.mask.copy()
    other = uuid.uuid4().hex
    wb.open_image(other, DOG)
    wb.click(other, 300, 250)
    assert rotated_mask.shape == (534, 800)
    assert np.array_equal(rotated_mask, wb.session(other).prompt.mask)
    # and the accepted mask is exported in those displayed pixels
    wb.accept(sid, "dog")
    ann = wb.session(sid).doc.annotations[-1]
    assert ann.rle["size"] == [534, 800] and np.array_equal(mask_utils.decode(ann.rle).astype(bool), rotated_mask)
    # a JPEG from a phone, likewise (lossy, so close rather than equal)
    jpeg = rotated_with_exif(dog, tmp_path / "phone.jpg", quality=95)
    wb.open_image(sid, jpeg)
    assert wb.session(sid).image.shape == dog.shape
    assert np.abs(wb.session(sid).image.astype(int) - dog).mean() < 4


def test_animated_gif_uses_the_first_frame_and_says_so(wb, sid, tmp_path):
    records = with_masks(wb, sid)
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    path = tmp_path / "wave.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    v = wb.open_image(sid, path)
    assert "wave.gif is animated (3 frames); the first frame is used" in v.message
    img = wb.session(sid).image
    assert img.shape == (30, 40, 3) and (np.abs(img.astype(int) - (200, 30, 30)).max(axis=2) < 8).all()
    wb.open_image(sid, DOG)
    assert_untouched_and_working(wb, sid, records)


def test_a_1x1_image_can_be_prompted_and_exported(wb, sid, tmp_path):
    path = save(tmp_path, "dot.png", Image.new("RGB", (1, 1), (250, 10, 10)))
    v = wb.open_image(sid, path)
    assert v.canvas.shape == (1, 1, 3)
    v = wb.click(sid, 0, 0)
    assert len(v.candidates) == 3 and wb.session(sid).prompt.mask.shape == (1, 1)
    with pytest.raises(WorkbenchError, match="outside the image"):
        wb.click(sid, 2, 0)
    wb.session(sid).doc.add(np.ones((1, 1), bool), label="dot")
    out = wb.export(sid, "rle", figures=False, out_dir=tmp_path / "out")
    data = json.loads(out.coco.read_text())
    assert data["images"][0]["width"] == 1 and data["annotations"][0]["area"] == 1


# -- prompts outside the image or without area ------------------------------------------------
@pytest.mark.parametrize(
    "x, y, mode, message",
    [
        (-5, 10, "positive", r"\(-5, 10\) is outside the image \(800x534 pixels\)"),
        (900, 10, "negative", r"\(900, 10\) is outside the image"),
        (10, 1e9, "positive", r"outside the image"),
        (float("nan"), 10, "positive", r"must be numbers"),
        (10, float("inf"), "box", r"must be numbers"),
        (-1, -1, "box", r"outside the image"),
    ],
)
def test_a_point_outside_the_image_is_refused_and_the_prompt_kept(wb, sid, x, y, mode, message):
    records = with_masks(wb, sid)
    wb.click(sid, 320, 300, "positive")
    before = wb.session(sid).prompt
    points, mask = list(before.points), before.mask.copy()
    with pytest.raises(WorkbenchError, match=message):
        wb.click(sid, x, y, mode)
    after = wb.session(sid).prompt
    assert after.points == points and np.array_equal(after.mask, mask)
    wb.clear_prompt(sid)
    assert_untouched_and_working(wb, sid, records)


def test_boxes_without_area_or_outside_the_image(wb, sid):
    records = with_masks(wb, sid)
    for (x0, y0), (x1, y1) in (((100, 100), (100, 100)), ((100, 100), (300, 100)), ((50, 80), (50, 400))):
        wb.click(sid, x0, y0, "box")
        v = wb.click(sid, x1, y1, "box")
        assert "the two corners must differ" in v.message and wb.session(sid).prompt.box is None
    wb.click(sid, 100, 100, "box")
    with pytest.raises(WorkbenchError, match="outside the image"):
        wb.click(sid, 5000, 5000, "box")
    v = wb.click(sid, 400, 300, "box")  # the first corner is still set: this completes the box
    assert v.message.startswith("box set") and wb.session(sid).prompt.box == (100, 100, 400, 300)
    # the whole image edge to edge is a valid box
    wb.clear_prompt(sid)
    wb.click(sid, 0, 0, "box")
    assert wb.click(sid, 800, 534, "box").message.startswith("box set")
    wb.clear_prompt(sid)
    assert_untouched_and_working(wb, sid, records)


def test_canvas_clicks_outside_are_clamped_to_the_edge(wb, sid):
    with_masks(wb, sid)
    wb.click_display(sid, -40, 10_000, "positive")
    assert wb.session(sid).prompt.points == [(0.0, 533.0)]


# -- malformed COCO files ---------------------------------------------------------------------
def coco_for_dog(**changes) -> dict:
    h, w = 534, 800
    m = np.zeros((h, w), np.uint8, order="F")
    m[100:200, 100:300] = 1
    rle = mask_utils.encode(m)
    data = {
        "images": [{"id": 1, "file_name": "dog.jpg", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [100, 100, 200, 100],
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            }
        ],
    }
    for path, value in changes.items():
        *keys, last = path.split(".")
        target = data
        for k in keys:
            target = target[int(k) if k.isdigit() else k]
        target[int(last) if last.isdigit() else last] = value
    return data


BAD_COCO = [
    ("bad JSON", '{"images": [{"id": 1,', r"not valid JSON: .* line 1"),
    ("not UTF-8", b"\xff\xfe\x00garbage", r"not a UTF-8 text file"),
    ("not COCO", json.dumps({"hello": "world"}), r"needs an 'annotations' list"),
    (
        "wrong image size",
        coco_for_dog(
            **{
                "images.0.height": 100,
                "images.0.width": 100,
                "annotations.0.segmentation.size": [100, 100],
                "annotations.0.segmentation.counts": [10000],
            }
        ),
        r"dog.jpg is 100x100 but the open image is 800x534",
    ),
    (
        "RLE of another size",
        coco_for_dog(**{"annotations.0.segmentation.size": [100, 100]}),
        r"bad RLE: RLE counts sum to 427200 pixels but the mask is 100x100",
    ),
    (
        "bad RLE counts",
        coco_for_dog(**{"annotations.0.segmentation.counts": [2, 3, 16]}),
        r"bad RLE: RLE counts sum to 21",
    ),
    ("garbled RLE string", coco_for_dog(**{"annotations.0.segmentation.counts": "0\x7f"}), r"bad RLE"),
    ("negative bbox", coco_for_dog(**{"annotations.0.bbox": [100, -100, 200, 100]}), r"bbox has a negative value"),
    ("NaN bbox", coco_for_dog(**{"annotations.0.bbox": [100, float("nan"), 200, 100]}), r"bbox has a NaN"),
    ("unknown image id", coco_for_dog(**{"annotations.0.image_id": 7}), r"unknown image_id 7"),
    ("unknown category", coco_for_dog(**{"annotations.0.category_id": 9}), r"unknown category_id 9"),
    (
        "no matching image",
        coco_for_dog(
            **{
                "images": [
                    {"id": 1, "file_name": "cat.jpg", "height": 534, "width": 800},
                    {"id": 2, "file_name": "bird.jpg", "height": 534, "width": 800},
                ]
            }
        ),
        r"has no image named dog.jpg",
    ),
]


@pytest.mark.parametrize("case, content, message", BAD_COCO, ids=[c[0] for c in BAD_COCO])
def test_a_malformed_coco_import_is_refused_and_the_masks_stay(wb, sid, tmp_path, case, content, message):
    records = with_masks(wb, sid)
    path = tmp_path / "dog.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(WorkbenchError, match=message) as e:
        wb.import_annotations(sid, path)
    assert "Traceback" not in str(e.value)
    assert wb.session(sid).doc.records() == records
    # the next valid import works
    good = tmp_path / "good.json"
    good.write_text(json.dumps(coco_for_dog()))
    v = wb.import_annotations(sid, good)
    assert "Imported 1 mask" in v.message and len(wb.session(sid).doc) == len(records) + 1
    wb.session(sid).doc.undo()
    assert_untouched_and_working(wb, sid, records)


def test_imported_json_over_the_size_limit_is_refused_unread(tiny_checkpoint, sid, tmp_path, monkeypatch):
    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    small = Workbench(segmenter, info, limits=Limits(max_json_mb=1 / 1024))  # 1 KB
    records = with_masks(small, sid)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(coco_for_dog()) + " " * 2048)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the file was parsed")

    monkeypatch.setattr(json, "loads", no_parsing)
    with pytest.raises(WorkbenchError, match=r"the file is 2.\d+ KB; imported JSON may be at most 1 KB"):
        small.import_annotations(sid, path)
    monkeypatch.undo()
    assert small.session(sid).doc.records() == records
    path.write_text(json.dumps(coco_for_dog()))
    assert path.stat().st_size <= 1024
    assert "Imported 1 mask" in small.import_annotations(sid, path).message


# -- checkpoints that are not SAM checkpoints ---------------------------------------------------
class Payload:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def bad_checkpoints(tmp_path, tiny_checkpoint) -> dict:
    marker = tmp_path / "pwned"
    files = {
        "text": (tmp_path / "notes.pth", b"hello, not weights"),
        "empty": (tmp_path / "empty.pth", b""),
        "truncated": (tmp_path / "half.pth", tiny_checkpoint.read_bytes()[:4096]),
    }
    for path, data in files.values():
        path.write_bytes(data)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        torch.save({"model": Payload(marker)}, f, pickle_module=pickle)
    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, other)
    return {**{k: p for k, (p, _) in files.items()}, "pickle with code": evil, "another model": other}, marker


def test_serve_with_a_file_that_is_not_a_sam_checkpoint_says_so_in_one_line(tmp_path, tiny_checkpoint, capsys):
    from annotator.cli import main

    files, marker = bad_checkpoints(tmp_path, tiny_checkpoint)
    for what, path in files.items():
        rc = main(["serve", "--checkpoint", str(path), "--device", "cpu", "--no-download"])
        err = capsys.readouterr().err.strip()
        assert rc == 2, what
        assert err.startswith("annotator: ") and "Traceback" not in err, (what, err)
        assert len(err.splitlines()) == 1, (what, err)
        assert path.name in err, (what, err)
    assert not marker.exists()  # the pickle's code never ran


def test_serve_exit_code_and_stderr_in_a_real_process(tmp_path, tiny_checkpoint):
    files, marker = bad_checkpoints(tmp_path, tiny_checkpoint)
    path = files["pickle with code"]
    out = subprocess.run(
        [sys.executable, "-m", "annotator", "serve", "--checkpoint", str(path), "--device", "cpu", "--no-download"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "evil.pth" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not marker.exists()


def test_bad_limit_values_are_one_line_errors(capsys, monkeypatch):
    from annotator.cli import main

    monkeypatch.setenv("ANNOTATOR_MAX_MASKS", "lots")
    assert main(["serve", "--device", "cpu", "--no-download"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "annotator: ANNOTATOR_MAX_MASKS must be a positive whole number; got 'lots'"
    with pytest.raises(SystemExit) as e:
        main(["serve", "--max-pixels", "-3"])
    assert e.value.code == 2 and "--max-pixels must be a positive number" in capsys.readouterr().err
