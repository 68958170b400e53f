"""The app exports every training format, checked by reading it back (issue 16)."""

import json
import zipfile

import numpy as np
import pytest

from annotator.annotations import rle as rle_utils
from annotator.app.workbench import WorkbenchError
from annotator.formats import convert
from conftest import IMAGES


def two_masks(wb, sid):
    wb.open_image(sid, IMAGES / "dog.jpg")
    h, w = wb.session(sid).doc.size
    a = np.zeros((h, w), bool)
    a[100:300, 150:420] = True
    a[180:220, 250:300] = False  # a hole
    b = np.zeros((h, w), bool)
    b[350:480, 500:700] = True
    wb.session(sid).doc.add(a, label="dog", review="accepted")
    wb.session(sid).doc.add(b, label="ball", review="accepted")
    return {"dog": a, "ball": b}


@pytest.mark.parametrize("fmt", ["coco-rle", "coco-polygon", "yolo", "labelme", "voc"])
def test_every_format_exports_and_reads_back_as_the_masks(wb, sid, fmt, tmp_path):
    masks = two_masks(wb, sid)
    out = wb.export(sid, fmt, figures=False)
    assert out.files[0].is_file()
    assert f"as {convert.FORMATS[fmt]}" in out.view.message and "exact" in out.view.message
    source = out.files[0]
    if source.suffix == ".zip":
        with zipfile.ZipFile(source) as z:
            z.extractall(tmp_path / "x")
            assert any(n.startswith("images/") or "JPEGImages" in n or n.endswith(".jpg") for n in z.namelist())
        source = tmp_path / "x"
    back = convert.load(source).dataset
    assert sorted(c["name"] for c in back.categories if c["name"] in masks) == ["ball", "dog"]
    names = back.category_names
    for ann in back.annotations:
        got = rle_utils.decode(ann["segmentation"]).astype(bool)
        want = masks[names[ann["category_id"]]]
        assert (got & want).sum() / (got | want).sum() == 1.0  # exact at tolerance 0


def test_polygon_tolerance_is_reported_as_its_cost(wb, sid):
    import cv2

    wb.open_image(sid, IMAGES / "dog.jpg")
    disc = np.zeros(wb.session(sid).doc.size, np.uint8)
    cv2.circle(disc, (300, 250), 120, 1, -1)  # a round outline loses pixels when simplified
    wb.session(sid).doc.add(disc.astype(bool), label="ball", review="accepted")
    out = wb.export(sid, "coco-polygon", figures=False, tolerance=3.0)
    data = json.loads(out.files[0].read_text())
    assert all("counts" not in a["segmentation"] for a in data["annotations"])
    assert "min IoU 0.9" in out.view.message and "exact" not in out.view.message


def test_an_unknown_format_is_refused_and_nothing_is_written(wb, sid):
    two_masks(wb, sid)
    with pytest.raises(WorkbenchError, match="export format must be one of"):
        wb.export(sid, "pascal", figures=False)
