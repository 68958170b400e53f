"""Export each training format from the app in the browser and read the download back (issue 16)."""

import zipfile

import numpy as np
import pytest
from conftest import IMAGES
from test_browser import app, browser, page, session_showing, shot, wait_message, wait_status  # noqa: F401

from annotator.annotations import rle as rle_utils
from annotator.formats import convert

pytestmark = pytest.mark.browser

FORMATS = [("rle", "coco-rle"), ("polygon", "coco-polygon"), ("yolo", "yolo"), ("labelme", "labelme"), ("voc", "voc")]


def test_every_format_downloads_and_reads_back(app, page, tmp_path):
    demo, _ = app
    page.locator("#upload input[type=file]").set_input_files(str(IMAGES / "dog.jpg"))
    wait_status(page, "embedding cached")
    sess = session_showing(demo, "dog.jpg")
    h, w = sess.doc.size
    ball = np.zeros((h, w), bool)
    ball[300:420, 480:620] = True
    dog = np.zeros((h, w), bool)
    dog[80:300, 120:400] = True
    dog[150:200, 200:260] = False  # a hole
    sess.doc.add(dog, label="dog", review="accepted")
    sess.doc.add(ball, label="ball", review="accepted")
    want = {"dog": dog, "ball": ball}
    page.get_by_role("tab", name="Export / import").click()
    for value, fmt in FORMATS:
        page.locator(f"#segmentation input[value={value}]").check()
        page.locator("#with-figures input").uncheck()
        page.locator("#export").click()
        # the message and the download button come in the same response
        wait_message(page, f"as {convert.FORMATS[fmt]} ")
        page.wait_for_function("() => !document.querySelector('#download-coco').disabled")
        with page.expect_download() as download:
            page.locator("#download-coco").click()
        path = tmp_path / fmt / download.value.suggested_filename
        path.parent.mkdir()
        download.value.save_as(path)
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp_path / fmt / "x")
            path = tmp_path / fmt / "x"
        back = convert.load(path).dataset
        names = back.category_names
        got = {names[a["category_id"]]: rle_utils.decode(a["segmentation"]).astype(bool) for a in back.annotations}
        assert set(got) == {"dog", "ball"}, (fmt, set(got))
        for name, mask in want.items():
            assert np.array_equal(got[name], mask), (fmt, name)  # exact at tolerance 0
        assert "exact" in page.locator("#message textarea").input_value()
    shot(page, "export-formats")
