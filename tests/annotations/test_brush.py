"""Brush and eraser strokes on a mask: one undoable document edit, areas as drawn."""

import math

import numpy as np
import pytest

from annotator.annotations.brush import apply_strokes
from annotator.annotations.document import AnnotationDocument

H, W = 120, 160


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def stroke(points, radius, erase=False):
    return {"points": points, "radius": radius, "erase": erase}


def within(points, radius):
    """Reference: pixels whose centre (x, y integer) is within ``radius`` of the polyline."""
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    best = np.full((H, W), np.inf)
    pts = np.asarray(points, float)
    for a, b in zip(pts, pts[1:] if len(pts) > 1 else pts, strict=False):
        d = b - a
        t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(xs - a[0] - t * d[0], ys - a[1] - t * d[1]))
    return best <= radius


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize(
    "points, radius",
    [
        ([[40, 60], [100, 60]], 5),
        ([[20, 20], [90, 70], [140, 30]], 7.5),
        ([[70.3, 40.6], [71, 90.2]], 2.5),
    ],
)
def test_a_brush_stroke_covers_the_pixels_within_its_radius(points, radius):
    out = apply_strokes(np.zeros((H, W), bool), [stroke(points, radius)])
    # thin strokes are dominated by how boundary pixels are counted
    assert iou(out, within(points, radius)) > (0.95 if radius >= 5 else 0.85)
    capsule = 2 * radius * math.dist(points[0], points[1]) + math.pi * radius**2
    if len(points) == 2:
        assert abs(out.sum() - capsule) / capsule < 0.12


def test_a_single_point_is_a_dot_and_subpixel_points_are_kept():
    out = apply_strokes(np.zeros((H, W), bool), [stroke([[50.5, 50.5]], 4)])
    assert abs(out.sum() - math.pi * 16) < 12
    ys, xs = np.nonzero(out)
    assert abs(xs.mean() - 50.5) < 0.6 and abs(ys.mean() - 50.5) < 0.6


def test_strokes_apply_in_order():
    base = rect(20, 20, 80, 80)
    erased = apply_strokes(base, [stroke([[50, 20], [50, 80]], 3, erase=True)])
    assert not erased[50, 50] and erased[50, 30] and base[50, 50]  # input untouched
    repainted = apply_strokes(base, [stroke([[50, 20], [50, 80]], 3, erase=True), stroke([[50, 50]], 2)])
    assert repainted[50, 50] and not repainted[30, 50]


def test_paint_is_one_undoable_edit_and_undo_restores_the_mask():
    doc = AnnotationDocument(H, W)
    ann = doc.add(rect(20, 20, 60, 60))
    before = doc[ann]
    doc.paint(ann, [stroke([[60, 40], [100, 40]], 4), stroke([[30, 30], [30, 50]], 3, erase=True)])
    after = doc[ann]
    assert doc.undo_action == f"paint mask {ann}"
    grown = after.mask() & ~before.mask()
    cut = before.mask() & ~after.mask()
    assert iou(grown, within([[60, 40], [100, 40]], 4) & ~before.mask()) > 0.9
    assert iou(cut, within([[30, 30], [30, 50]], 3) & before.mask()) > 0.9
    assert after.area == before.area + grown.sum() - cut.sum()
    assert doc.undo() == f"paint mask {ann}"
    assert doc[ann].counts == before.counts
    assert doc.redo() and doc[ann].counts == after.counts


def test_erasing_a_mask_away_is_refused_and_changes_nothing():
    doc = AnnotationDocument(H, W)
    ann = doc.add(rect(10, 10, 14, 14))
    version = doc.version
    with pytest.raises(ValueError, match="delete it instead"):
        doc.paint(ann, [stroke([[12, 12]], 10, erase=True)])
    assert doc.version == version and doc[ann].area == 16


@pytest.mark.parametrize(
    "bad",
    [
        {"points": [], "radius": 3},
        {"points": [[1, 2]], "radius": 0},
        {"points": [[1, 2]]},
        {"points": [[float("nan"), 2]], "radius": 3},
        {"points": "x", "radius": 3},
    ],
)
def test_bad_strokes_get_a_clear_message(bad):
    with pytest.raises(ValueError, match="stroke 0"):
        apply_strokes(np.zeros((H, W), bool), [bad])


def test_strokes_far_outside_the_image_are_clipped():
    out = apply_strokes(np.zeros((H, W), bool), [stroke([[-1e9, 10], [1e9, 10]], 2)])
    assert out[10].all() and out.sum() == 5 * W
