"""What parity with the official automatic mask generator means, for the tests that check it
(tests/amg/test_generator.py, tests/models/test_mobilesam.py)."""

import numpy as np
from pycocotools import mask as mask_utils

KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
EVERY_CANDIDATE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def assert_parity(official: list[dict], ours: list[dict]):
    """>= 99% of the official masks found again with IoU >= 0.98 and predicted_iou and
    stability_score within 1e-3; mask count within 1%. (coco_rle records)"""
    assert abs(len(ours) - len(official)) <= 0.01 * len(official), (len(official), len(ours))
    for rec in ours:
        assert set(rec) == KEYS

    def close(a, b):
        return (
            abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
            and abs(a["stability_score"] - b["stability_score"]) <= 1e-3
        )

    by_counts: dict[str, list[dict]] = {}
    for rec in ours:
        by_counts.setdefault(rec["segmentation"]["counts"], []).append(rec)
    # identical masks first (cheap); IoU (pycocotools) only for the rest
    rest = [r for r in official if not any(close(r, m) for m in by_counts.get(r["segmentation"]["counts"], []))]
    found = len(official) - len(rest)
    if rest and ours:
        ious = mask_utils.iou([r["segmentation"] for r in rest], [r["segmentation"] for r in ours], [0] * len(ours))
        for i, ref in enumerate(rest):
            found += any(close(ref, ours[j]) for j in np.flatnonzero(ious[i] >= 0.98))
    assert found >= 0.99 * len(official), f"{found} of {len(official)} official masks found"
    return found
