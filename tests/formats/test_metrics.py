"""Metrics against hand-computed values and pycocotools' COCOeval."""

import numpy as np
import pytest
from conftest import LABELME_COCO

from annotator.annotations import rle as rle_utils
from annotator.formats import coco, metrics

LABELME = LABELME_COCO / "annotations.json"


def box(x0, y0, x1, y1, h=20, w=20):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_and_dice_by_hand():
    a, b = box(0, 0, 10, 10), box(5, 0, 15, 10)  # 100 px each, 50 shared
    assert metrics.iou(a, b) == pytest.approx(50 / 150)
    assert metrics.dice(a, b) == pytest.approx(100 / 200)
    assert metrics.iou(rle_utils.encode(a), b) == pytest.approx(50 / 150)  # RLE or dense
    assert metrics.iou(a, a) == 1.0 and metrics.iou(a, box(15, 15, 20, 20)) == 0.0
    empty = np.zeros((20, 20), bool)
    assert metrics.iou(empty, empty) == 1.0 and metrics.dice(empty, a) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        metrics.iou(a, np.zeros((5, 5), bool))


def test_semantic_metrics_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0]])
    assert metrics.pixel_accuracy(pred, gt) == pytest.approx(9 / 12)
    assert metrics.pixel_accuracy(pred, gt, ignore_index=255) == pytest.approx(9 / 11)
    conf = metrics.confusion_matrix(pred, gt, 3, ignore_index=255)
    assert conf.tolist() == [[3, 1, 0], [0, 4, 0], [1, 0, 2]]
    # class IoUs: 0: 3/(4+4-3)=0.6, 1: 4/(4+5-4)=0.8, 2: 2/(3+2-2)=2/3
    assert metrics.mean_iou(pred, gt, 3, ignore_index=255) == pytest.approx((0.6 + 0.8 + 2 / 3) / 3)
    assert np.isnan(metrics.class_ious(np.zeros((2, 2), np.int64))).all()
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.confusion_matrix(pred, gt, 3)


def test_class_agnostic_recall_thresholds():
    gt = [box(0, 0, 10, 10), box(10, 10, 20, 20), box(0, 15, 5, 20)]
    pred = [
        box(0, 0, 10, 8),  # IoU 0.8 with gt 0
        box(10, 10, 20, 16),
    ]  # IoU 0.6 with gt 1; gt 2 is missed
    r = metrics.recall(pred, gt)
    assert r[0.5] == pytest.approx(2 / 3) and r[0.75] == pytest.approx(1 / 3)
    assert metrics.best_ious(pred, gt) == pytest.approx([0.8, 0.6, 0.0])
    assert metrics.best_ious([], gt).tolist() == [0, 0, 0]


def test_containment_is_the_inside_fraction():
    big, small = box(0, 0, 10, 10), box(0, 0, 5, 4)
    c = metrics.containment([big, small])
    assert c[1, 0] == pytest.approx(1.0) and c[0, 1] == pytest.approx(20 / 100)
    assert c[0, 0] == pytest.approx(1.0)


def test_evaluate_ground_truth_against_itself_is_perfect():
    gt = coco.load(LABELME)  # annotation id 0 there: must still count as a match
    report = metrics.evaluate(gt, gt)
    assert report.recall == {0.5: 1.0, 0.75: 1.0} and report.mean_best_iou == pytest.approx(1.0)
    assert report.pixel_accuracy == 1.0 and report.miou == 1.0
    assert report.ap["AP"] == pytest.approx(1.0) and report.ap["AP75"] == pytest.approx(1.0)
    assert report.images == 3 and report.gt_instances == 12


def shrunk(dataset, pixels):
    """A copy of ``dataset`` whose masks are eroded by ``pixels``."""
    import cv2

    out = coco.load(coco.to_json(dataset))
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    for ann in out.annotations:
        m = rle_utils.decode(ann["segmentation"]).astype(np.uint8)
        ann["segmentation"] = rle_utils.encode(cv2.erode(m, kernel) > 0)
        ann["score"] = 0.5
    return out


def test_evaluate_degrades_with_worse_masks_and_agrees_with_cocoeval(tmp_path):
    gt = coco.load(LABELME)
    slightly, badly = metrics.evaluate(shrunk(gt, 1), gt), metrics.evaluate(shrunk(gt, 6), gt)
    assert slightly.mean_best_iou > badly.mean_best_iou
    assert slightly.recall[0.5] == 1.0 and badly.recall[0.75] < 1.0
    assert slightly.ap["AP"] > badly.ap["AP"]
    assert slightly.pixel_accuracy > badly.pixel_accuracy and slightly.miou > badly.miou
    assert cocoeval_stats(shrunk(gt, 6), tmp_path) == pytest.approx(badly.ap)


def cocoeval_stats(pred, tmp_path) -> dict[str, float]:
    """pycocotools' COCOeval run the usual way on the ground-truth file and ``pred`` written as
    a COCO results file: what a user would compare our segm AP with."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json = json.loads(LABELME.read_text())
    # COCOeval tests a matched annotation's id for truth, so labelme's annotation id 0 would
    # never count as found: number them from 1 (the file is otherwise used as it is)
    for k, ann in enumerate(gt_json["annotations"]):
        ann["id"] = k + 1
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": a["score"],
            "segmentation": rle_utils.to_json(a["segmentation"]),
        }
        for a in pred.annotations
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(gt_coco, gt_coco.loadRes(str(tmp_path / "results.json")), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(metrics.AP_NAMES, map(float, ev.stats), strict=True))


def test_evaluate_class_agnostic_predictions_by_file_name(tmp_path):
    gt = coco.load(LABELME)
    image = gt.images[2]
    amg = [
        {
            "segmentation": rle_utils.to_json(a["segmentation"]),
            "predicted_iou": 0.9,
            "bbox": a["bbox"],
            "area": a["area"],
            "point_coords": [[0, 0]],
            "stability_score": 0.9,
            "crop_box": [0, 0, 1, 1],
        }
        for a in gt.annotations_for(image["id"])[:3]
    ]
    pred = coco.load_amg(amg, file_name="2011_000006")  # amg.py names output after the image
    assert metrics.match_images(pred, gt) == {1: image["id"]}
    report = metrics.evaluate(pred, gt)
    assert report.recall[0.5] == pytest.approx(3 / 6)
    assert report.ap is None and report.miou is None
    assert "need categories" in report.notes[0]
    table = report.table()
    assert "recall@0.5" in table and "segm AP" in table and "n/a" in table


def test_unmatched_images_are_an_error():
    gt = coco.load(LABELME)
    m = box(0, 0, 3, 3, 10, 10)
    pred = coco.load_amg([{"segmentation": rle_utils.to_json(rle_utils.encode(m))}], file_name="other")
    with pytest.raises(ValueError, match="cannot match the predicted images"):
        metrics.evaluate(pred, gt)
