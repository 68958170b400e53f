"""Backend choice, the classical fallback, image loading, and `annotator serve`."""

import io
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from annotator.formats.images import ImageError, load_image
from annotator.models.checkpoints import CheckpointError
from annotator.models.grabcut import GrabCutSegmenter
from annotator.models.loading import load_segmenter
from annotator.models.predictor import SamSegmenter
from annotator.testing import free_port

BOWL = np.array([490, 140, 662, 262])  # the steel bowl in dog.jpg (x0, y0, x1, y1)


def test_grabcut_box_around_real_object_stays_inside_the_box(dog):
    seg = GrabCutSegmenter()
    seg.set_image(dog)
    pred = seg.predict(box=BOWL)
    mask = pred.masks[0]
    assert mask.shape == dog.shape[:2] and pred.masks.shape[0] == 1
    x0, y0, x1, y1 = BOWL
    inside = mask[y0:y1, x0:x1].sum()
    assert inside == mask.sum(), "mask leaks outside the box"
    box_area = (x1 - x0) * (y1 - y0)
    assert 0.3 * box_area < inside < 0.98 * box_area
    assert mask[200, 575], "the middle of the bowl is not in the mask"
    assert np.isnan(pred.scores).all()  # GrabCut has no quality estimate; it says so


def test_grabcut_points_only_and_negative_points(dog):
    seg = GrabCutSegmenter()
    seg.set_image(dog)
    pred = seg.predict(point_coords=[[575, 200], [300, 450]], point_labels=[1, 0])
    mask = pred.masks[0]
    assert mask[200, 575] and not mask[450, 300]


def test_fallback_is_loud_and_only_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOTATOR_CACHE", str(tmp_path))
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    seg, info = load_segmenter("vit_b", device="cpu", download=False)
    assert isinstance(seg, GrabCutSegmenter) and info.backend == "classical"
    assert "NOT SAM" in info.status and "sam_vit_b_01ec64.pth" in info.status
    with pytest.raises(CheckpointError):
        load_segmenter("vit_b", device="cpu", download=False, fallback=False)


def test_weights_present_means_sam(tiny_checkpoint):
    seg, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    assert isinstance(seg, SamSegmenter) and info.backend == "sam"
    assert "SAM tiny" in info.status and tiny_checkpoint.name in info.status and "cpu" in info.status


def test_a_broken_explicit_checkpoint_is_an_error_not_a_fallback(tmp_path):
    bad = tmp_path / "sam.pth"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_segmenter("vit_b", str(bad), device="cpu")


def test_load_image_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (200, 100), (10, 20, 30))
    img.paste((255, 0, 0), (0, 0, 16, 16))  # a red block at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=100)
    arr = load_image(path)
    assert arr.shape == (200, 100, 3) and arr.dtype == np.uint8
    assert arr[4, -5, 0] > 200 and arr[-5, 4, 0] < 100  # shown rotated: the block is top-right


# the colour (200, 100, 50) stored in each mode, and the RGB it must come back as: gray for
# L (ITU-R 601 luma), the nearest web-palette colour for P, itself for RGBA and CMYK
@pytest.mark.parametrize(
    "mode, expected, tol",
    [("L", (124, 124, 124), 1), ("RGBA", (200, 100, 50), 0), ("P", (204, 102, 51), 0), ("CMYK", (200, 100, 50), 1)],
)
def test_load_image_converts_modes_to_rgb(mode, expected, tol):
    rgb = Image.new("RGB", (16, 8), (200, 100, 50))
    img = rgb.convert("P", dither=Image.Dither.NONE) if mode == "P" else rgb.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
    arr = load_image(buf.getvalue())
    assert arr.shape == (8, 16, 3) and arr.dtype == np.uint8
    assert np.abs(arr.astype(int) - expected).max() <= tol, arr[0, 0]


def test_load_image_stretches_16_bit_to_8_bit_gray():
    a = np.full((8, 16), 60000, np.uint16)
    a[:, :8] = 15000  # a quarter of the brightest value
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF")
    arr = load_image(buf.getvalue())
    assert arr.shape == (8, 16, 3) and arr.dtype == np.uint8
    assert (arr[:, 8:] == 255).all() and (np.abs(arr[:, :8].astype(int) - 64) <= 1).all()


def test_load_image_bad_input_messages(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(fake)
    big = io.BytesIO()
    Image.new("RGB", (300, 300)).save(big, format="PNG")
    with pytest.raises(ImageError, match="megapixels"):
        load_image(big.getvalue(), max_pixels=50_000)


@pytest.mark.parametrize("entry", [["-m", "annotator", "serve"], ["app.py"]])
def test_serve_starts_the_app_and_reports_the_backend(tiny_checkpoint, entry, tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        ANNOTATOR_MODEL="tiny",
        ANNOTATOR_CHECKPOINT=str(tiny_checkpoint),
        ANNOTATOR_DEVICE="cpu",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, *entry], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2).read().decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail("app did not start:\n" + proc.stdout.read())
                time.sleep(0.5)
        assert "SAM tiny" in config and tiny_checkpoint.name in config
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_with_a_missing_checkpoint_explains(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "annotator", "serve", "--model", "vit_b", "--checkpoint", str(tmp_path / "missing.pth")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "checkpoint file not found" in out.stderr
