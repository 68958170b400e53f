"""Grouping redundant masks by IoU and the containment hierarchy, on constructed masks with
known answers and against brute force on random ones."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotator.annotations.redundancy import (
    containment_parents,
    group_by_iou,
    keep_best,
    merge_groups,
    rle_areas,
    to_rles,
)

H, W = 60, 80


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def encode(masks):
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def dense_iou(masks):
    flat = np.stack([m.ravel() for m in masks]).astype(np.float64)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), inter, area


def brute_groups(masks, scores, thresh):
    iou, _, _ = dense_iou(masks)
    group = np.full(len(masks), -1)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if group[i] >= 0:
            continue
        group[i] = i
        group[(group < 0) & (iou[i] > thresh)] = i
    return group


def brute_parents(masks, thresh):
    _, inter, area = dense_iou(masks)
    n = len(masks)
    parent = np.full(n, -1)
    for i in range(n):
        if area[i] == 0:
            continue
        cands = [j for j in range(n) if (area[j], -j) > (area[i], -i) and inter[i, j] / area[i] >= thresh]
        if cands:
            parent[i] = min(cands, key=lambda j: (area[j], -j))
    return parent


def random_masks(n, seed):
    """Rectangles and their jittered copies and sub-rectangles: plenty of overlaps, nesting
    and near-duplicates."""
    rng = np.random.default_rng(seed)
    masks = []
    while len(masks) < n:
        x0, y0 = rng.integers(0, W - 10), rng.integers(0, H - 10)
        x1, y1 = rng.integers(x0 + 5, W + 1), rng.integers(y0 + 5, H + 1)
        masks.append(rect(x0, y0, x1, y1))
        kind = rng.integers(3)
        if kind == 0:  # near copy
            d = rng.integers(-1, 2, size=4)
            masks.append(rect(max(x0 + d[0], 0), max(y0 + d[1], 0), x1 + d[2], y1 + d[3]))
        elif kind == 1:  # inside, with a little sticking out sometimes
            cx0, cy0 = rng.integers(x0, x1 - 2), rng.integers(y0, y1 - 2)
            m = rect(cx0, cy0, rng.integers(cx0 + 2, x1 + 1), rng.integers(cy0 + 2, y1 + 1))
            if rng.random() < 0.5:
                m[min(cy0, H - 1), max(cx0 - 1, 0)] = True
            masks.append(m)
    return masks[:n]


def test_near_duplicates_group_under_the_best_score():
    masks = [rect(10, 10, 40, 40), rect(11, 10, 41, 40), rect(10, 11, 40, 41), rect(50, 20, 70, 50)]
    scores = [0.5, 0.9, 0.7, 0.6]
    group = group_by_iou(encode(masks), scores, 0.8)
    assert group.tolist() == [1, 1, 1, 3]
    assert keep_best(encode(masks), scores, 0.8).tolist() == [1, 3]
    merged, leaders = merge_groups(encode(masks), scores, 0.8)
    assert leaders.tolist() == [1, 3]
    assert np.array_equal(mask_utils.decode(merged[0]).astype(bool), masks[0] | masks[1] | masks[2])
    assert np.array_equal(mask_utils.decode(merged[1]).astype(bool), masks[3])


def test_grouping_is_greedy_by_score_not_transitive():
    a, b, c = rect(0, 0, 40, 20), rect(4, 0, 44, 20), rect(8, 0, 48, 20)
    # IoU(a, b) = IoU(b, c) = 36/44 > 0.8, IoU(a, c) = 32/48 < 0.8
    rles = encode([a, b, c])
    assert group_by_iou(rles, [0.5, 0.9, 0.1], 0.8).tolist() == [1, 1, 1]  # b leads, takes both
    assert group_by_iou(rles, [0.9, 0.5, 0.1], 0.8).tolist() == [0, 0, 2]  # a takes b; c stays alone


def test_iou_must_exceed_the_threshold():
    a, b = rect(0, 0, 10, 10), rect(0, 0, 10, 8)  # IoU exactly 0.8
    assert group_by_iou(encode([a, b]), [1, 0], 0.8).tolist() == [0, 1]
    assert group_by_iou(encode([a, b]), [1, 0], 0.79).tolist() == [0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresh", [0.5, 0.8])
def test_grouping_matches_brute_force(seed, thresh):
    masks = random_masks(70, seed)
    scores = np.random.default_rng(seed + 10).random(len(masks))
    assert np.array_equal(group_by_iou(encode(masks), scores, thresh), brute_groups(masks, scores, thresh))


def test_containment_of_nested_and_overlapping_masks():
    masks = [
        rect(0, 0, 80, 60),  # 0: everything
        rect(10, 10, 50, 50),  # 1: inside 0
        rect(20, 20, 30, 30),  # 2: inside 1 (and 0): parent is the smaller, 1
        rect(45, 20, 60, 30),  # 3: 1/3 inside 1, inside 0
        rect(42, 30, 52, 50),  # 4: 80% inside 1 (60% inside 5): at 0.9 only inside 0
        rect(12, 12, 48, 48),  # 5: inside 1
    ]
    assert containment_parents(encode(masks), 0.9).tolist() == [-1, 0, 5, 0, 0, 1]
    assert containment_parents(encode(masks), 0.75).tolist() == [-1, 0, 5, 0, 1, 1]


def test_identical_masks_do_not_form_a_cycle():
    m = rect(5, 5, 20, 20)
    assert containment_parents(encode([m, m, m]), 0.9).tolist() == [-1, 0, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresh", [0.9, 0.6])
def test_containment_matches_brute_force(seed, thresh):
    masks = random_masks(70, seed)
    assert np.array_equal(containment_parents(encode(masks), thresh), brute_parents(masks, thresh))


def test_empty_masks_stay_alone():
    masks = [np.zeros((H, W), bool), np.zeros((H, W), bool), rect(0, 0, 5, 5)]
    assert group_by_iou(encode(masks), [1, 1, 1], 0.5).tolist() == [0, 1, 2]
    assert containment_parents(encode(masks), 0.9).tolist() == [-1, -1, -1]
    assert group_by_iou([], [], 0.5).tolist() == [] and containment_parents([]).tolist() == []


def test_inputs_in_any_rle_form_or_as_arrays():
    m = rect(3, 4, 30, 20)
    compressed = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    as_str = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    flat = m.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    uncompressed = {"size": [H, W], "counts": np.diff(np.r_[0, change, flat.size]).tolist()}
    rles = to_rles([compressed, as_str, uncompressed, m])
    assert all(r["counts"] == compressed["counts"] for r in rles)
    assert rle_areas(rles).tolist() == [m.sum()] * 4
    with pytest.raises(ValueError, match="different image sizes"):
        to_rles([m, np.zeros((5, 5), bool)])
    with pytest.raises(ValueError, match="scores"):
        group_by_iou([m, m], [1.0])


def test_area_in_chunks_beyond_pycocotools_limit():
    masks = encode([rect(0, 0, 1 + i % 7, 2) for i in range(300)])
    assert rle_areas(masks).tolist() == [2 * (1 + i % 7) for i in range(300)]
