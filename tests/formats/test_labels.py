"""Instance-id and class-index PNGs (annotator.formats.labels)."""

import cv2
import numpy as np
import pytest

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import AnnotationDocument
from annotator.formats import labels


def test_instance_png_round_trip_topmost_wins(tmp_path):
    doc = AnnotationDocument(30, 40)
    low = np.zeros((30, 40), bool)
    low[0:20, 0:20] = True
    high = np.zeros((30, 40), bool)
    high[10:30, 10:30] = True
    a = doc.add(low)
    b = doc.add(high)
    path = labels.write_instance_png(tmp_path / "inst.png", doc)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[15, 15] == b and raw[5, 5] == a and raw[29, 0] == 0
    masks = labels.read_instance_png(path)
    assert np.array_equal(rle_utils.decode(masks[b]), high)
    assert np.array_equal(rle_utils.decode(masks[a]), low & ~high)


def test_semantic_png_round_trip(tmp_path):
    doc = AnnotationDocument(30, 40)
    m1 = np.zeros((30, 40), bool)
    m1[:10] = True
    m2 = np.zeros((30, 40), bool)
    m2[20:] = True
    doc.add(m1, label="sky")
    doc.add(m2, label="road")
    classes = ["background", "road", "sky"]
    path = labels.write_semantic_png(tmp_path / "sem.png", doc, classes)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    back = labels.read_semantic_png(path, classes)
    assert set(back) == {"sky", "road"}
    assert np.array_equal(rle_utils.decode(back["sky"]), m1)
    doc.add(m2, label="car")
    with pytest.raises(ValueError, match=r"labels not among the classes: \['car'\]"):
        labels.write_semantic_png(tmp_path / "sem2.png", doc, classes)
    with pytest.raises(labels.LabelMapError, match="value 2 has no class"):
        labels.read_semantic_png(path, classes[:2])
