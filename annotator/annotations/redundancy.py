"""Redundant masks and mask structure, on COCO RLEs.

Automatic generation leaves near-duplicates (the same object found from several points or
crops) and nested masks (a wheel inside a truck). This module finds both:

- ``group_by_iou``: greedy grouping by score, like NMS on masks: the best-scoring mask not yet
  grouped leads a group and takes every ungrouped mask whose IoU with it exceeds the threshold;
  ``keep_best`` keeps the leaders, ``merge_groups`` replaces each group by its union.
- ``containment_parents``: mask A lies inside mask B when |A & B| / |A| >= ``thresh``; each mask's
  parent is the smallest mask it lies inside (only larger masks qualify, so the parents form a
  forest).

Pairs are pre-filtered with boxes and areas (IoU <= min(area) / max(area) and
|A & B| <= area of the boxes' intersection), and pycocotools computes the exact overlaps of the
remaining pairs on the RLEs; nothing is decoded to pixels.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

_AREA_CHUNK = 255  # pycocotools 2.0.11 + numpy 2: area() overflows for 256 or more RLEs at once


def to_rles(segmentations) -> list[dict]:
    """COCO RLEs from compressed RLEs (str or bytes counts), uncompressed RLEs (counts as a list)
    or binary (H, W) masks, in any mix."""
    out = []
    for i, seg in enumerate(segmentations):
        if isinstance(seg, dict):
            if "size" not in seg or "counts" not in seg:
                raise ValueError(f"segmentation {i} is a dict without 'size' and 'counts'")
            h, w = seg["size"]
            if isinstance(seg["counts"], list):
                seg = mask_utils.frPyObjects(seg, h, w)
            elif isinstance(seg["counts"], str):
                seg = {"size": [h, w], "counts": seg["counts"].encode()}
            out.append(seg)
        else:
            mask = np.asarray(seg)
            if mask.ndim != 2:
                raise ValueError(f"segmentation {i} has shape {mask.shape}; a binary mask is (H, W)")
            out.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
    sizes = {tuple(r["size"]) for r in out}
    if len(sizes) > 1:
        raise ValueError(f"masks of different image sizes: {sorted(sizes)}")
    return out


def rle_areas(rles: list[dict]) -> np.ndarray:
    if not rles:
        return np.zeros(0, np.int64)
    return np.concatenate(
        [mask_utils.area(rles[i : i + _AREA_CHUNK]).astype(np.int64) for i in range(0, len(rles), _AREA_CHUNK)]
    )


def rle_boxes_xyxy(rles: list[dict]) -> np.ndarray:
    """Boxes as float x0, y0, x1, y1 with exclusive x1, y1 (so box areas count pixels)."""
    if not rles:
        return np.zeros((0, 4))
    b = mask_utils.toBbox(rles)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _box_overlap(boxes: np.ndarray, i: int, js: np.ndarray) -> np.ndarray:
    """Area of the intersection of box i with boxes js."""
    w = np.minimum(boxes[i, 2], boxes[js, 2]) - np.maximum(boxes[i, 0], boxes[js, 0])
    h = np.minimum(boxes[i, 3], boxes[js, 3]) - np.maximum(boxes[i, 1], boxes[js, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def group_by_iou(rles, scores, iou_thresh: float = 0.8) -> np.ndarray:
    """Group id of every mask: the index of its group's leader (the group's best-scoring mask).
    Greedy by score: a leader takes every ungrouped mask with IoU > ``iou_thresh``."""
    rles = to_rles(rles)
    n = len(rles)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"{n} masks but {len(scores)} scores")
    group = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return group
    areas = rle_areas(rles).astype(np.float64)
    boxes = rle_boxes_xyxy(rles)
    order = np.argsort(-scores, kind="stable")
    for i in order:
        if group[i] >= 0:
            continue
        group[i] = i
        js = np.flatnonzero(group < 0)
        if len(js) == 0:
            break
        # IoU <= min(area) / max(area) and <= box intersection / max(area)
        big = np.maximum(areas[i], areas[js])
        bound = np.minimum(np.minimum(areas[i], areas[js]), _box_overlap(boxes, i, js))
        js = js[bound > iou_thresh * big]
        if len(js) == 0:
            continue
        ious = mask_utils.iou([rles[i]], [rles[j] for j in js], [0] * len(js))[0]
        group[js[ious > iou_thresh]] = i
    return group


def keep_best(rles, scores, iou_thresh: float = 0.8) -> np.ndarray:
    """Indices of the masks to keep, best score first: one per ``group_by_iou`` group."""
    group = group_by_iou(rles, scores, iou_thresh)
    leaders = np.flatnonzero(group == np.arange(len(group)))
    return leaders[np.argsort(-np.asarray(scores, dtype=np.float64)[leaders], kind="stable")]


def merge_groups(rles, scores, iou_thresh: float = 0.8) -> tuple[list[dict], np.ndarray]:
    """Each ``group_by_iou`` group replaced by the union of its masks. Returns the union RLEs
    and, for each, the index of the group's leader (best score first)."""
    rles = to_rles(rles)
    group = group_by_iou(rles, scores, iou_thresh)
    leaders = keep_best(rles, scores, iou_thresh) if len(rles) else np.zeros(0, np.int64)
    merged = []
    for leader in leaders:
        members = np.flatnonzero(group == leader)
        if len(members) == 1:
            merged.append(rles[leader])
        else:
            merged.append(mask_utils.merge([rles[m] for m in members], intersect=False))
    return merged, leaders


def containment_parents(rles, thresh: float = 0.9) -> np.ndarray:
    """Parent of every mask (-1 for none): the smallest mask B it lies inside, i.e. with
    |A & B| / |A| >= ``thresh``. Only masks larger than A (equal areas: a lower index) can be
    its parent, so there are no cycles."""
    rles = to_rles(rles)
    n = len(rles)
    parent = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return parent
    areas = rle_areas(rles).astype(np.float64)
    boxes = rle_boxes_xyxy(rles)
    # rank in (area, -index) order: a parent has a higher rank
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((-np.arange(n), areas))] = np.arange(n)
    for i in range(n):
        if areas[i] == 0:
            continue
        js = np.flatnonzero(rank > rank[i])
        # |A & B| <= min(|B|, box intersection) must reach thresh * |A|
        need = thresh * areas[i]
        js = js[(areas[js] >= need) & (_box_overlap(boxes, i, js) >= need)]
        if len(js) == 0:
            continue
        # pycocotools' crowd IoU against the gt is |dt & gt| / |dt|
        inside = mask_utils.iou([rles[i]], [rles[j] for j in js], [1] * len(js))[0] >= thresh
        if inside.any():
            cands = js[inside]
            parent[i] = cands[np.argmin(rank[cands])]
    return parent
