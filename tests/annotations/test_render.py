"""Overlays: label maps against dense references, exactness outside masks, caching; figures."""

import cv2
import numpy as np
import pytest
from PIL import Image

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import AnnotationDocument
from annotator.annotations.render import (
    LabelMapCache,
    Renderer,
    label_map_from_dense,
    label_map_from_rles,
    overlay,
    palette,
    render_document,
)
from annotator.formats import figures


def random_blobs(h, w, n, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), bool)
    for k in range(n):
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(
            m,
            (int(rng.integers(0, w)), int(rng.integers(0, h))),
            (int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
        if rng.random() < 0.4:  # a hole
            cv2.circle(m, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, 8)), 0, -1)
        out[k] = m.astype(bool)
    return out


def reference_labels(masks, order=None):
    labels = np.zeros(masks.shape[1:], np.int64)
    for k in range(len(masks)) if order is None else order:
        labels[masks[k]] = k + 1
    return labels


@pytest.fixture(scope="module")
def scene(truck):
    image = np.ascontiguousarray(truck[200:440, 300:620])  # a 320x240 piece of the real photo
    masks = random_blobs(*image.shape[:2], 40, seed=1)
    return image, masks, [rle_utils.encode(m) for m in masks]


def test_label_map_from_rles_matches_dense_painting(scene):
    _, masks, rles = scene
    assert (label_map_from_rles(rles, masks.shape[1:]) == reference_labels(masks)).all()
    order = list(np.random.default_rng(0).permutation(len(masks))[:30])
    assert (label_map_from_rles(rles, masks.shape[1:], order) == reference_labels(masks, order)).all()
    assert (label_map_from_dense(masks, order) == reference_labels(masks, order)).all()


def test_label_map_handles_long_and_short_runs():
    # tall masks are painted run by run, speckles through index arrays: both must agree
    h, w = 400, 50
    tall = np.zeros((h, w), bool)
    tall[:, 10:40] = True
    rng = np.random.default_rng(2)
    speckle = rng.random((h, w)) < 0.3
    masks = np.stack([tall, speckle, tall & ~speckle])
    rles = [rle_utils.encode(m) for m in masks]
    assert (label_map_from_rles(rles, (h, w)) == reference_labels(masks)).all()


def test_untouched_pixels_are_returned_unchanged(scene):
    image, masks, rles = scene
    covered = masks.any(axis=0)
    assert 0.05 < covered.mean() < 0.98
    for kwargs in (
        {},
        {"outlines": True, "outline_width": 3},
        {"selected": [3, 4], "hidden": [1, 7], "rejected": [2], "alpha": 0.8},
    ):
        out = overlay(image, rles, **kwargs)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.array_equal(out[~covered], image[~covered])
        assert (out[covered] != image[covered]).any()


def test_blend_matches_a_float_reference(scene):
    image, masks, rles = scene
    colors = palette(len(masks))
    alpha = 0.4
    labels = reference_labels(masks)
    ref = image.astype(np.float64)
    top = labels > 0
    c = colors[labels[top] - 1].astype(np.float64)
    ref[top] = ref[top] * (1 - alpha) + c * alpha
    out = overlay(image, rles, alpha=alpha, colors=colors)
    assert np.abs(out.astype(np.int64) - np.round(ref)).max() <= 1


def test_dense_and_rle_inputs_give_identical_overlays(scene):
    image, masks, rles = scene
    kw = dict(alpha=0.6, outlines=True, selected=[5], hidden=[0], rejected=[9])
    assert np.array_equal(overlay(image, masks, **kw), overlay(image, rles, **kw))


def test_alpha_zero_and_no_masks_leave_the_image_alone(scene):
    image, masks, rles = scene
    assert np.array_equal(overlay(image, rles, alpha=0.0), image)
    assert np.array_equal(overlay(image, []), image)
    assert np.array_equal(overlay(image, np.zeros((0, *image.shape[:2]), bool)), image)


def test_hidden_masks_stay_beneath_and_can_be_left_out():
    image = np.full((20, 20, 3), 100, np.uint8)
    under = np.zeros((20, 20), bool)
    under[5:15, 5:15] = True
    over = np.zeros((20, 20), bool)
    over[0:20, 0:20] = True
    rles = [rle_utils.encode(under), rle_utils.encode(over)]
    colors = [(255, 0, 0), (0, 0, 255)]
    out = overlay(image, rles, colors=colors, hidden=[1])
    assert out[10, 10, 0] > out[10, 10, 2]  # the visible mask shows through the hidden one above
    out = overlay(image, rles, colors=colors, hidden=[1], dim=0.0)
    assert np.array_equal(out[0, 0], image[0, 0])  # only the hidden mask there: left out
    assert not np.array_equal(out[10, 10], image[10, 10])


def test_selection_is_drawn_on_top_with_a_highlight_edge():
    image = np.zeros((30, 30, 3), np.uint8)
    a = np.zeros((30, 30), bool)
    a[5:25, 5:25] = True
    b = np.zeros((30, 30), bool)
    b[0:30, 0:30] = True
    out = overlay(image, [rle_utils.encode(a), rle_utils.encode(b)], colors=[(255, 0, 0), (0, 255, 0)], selected=[0])
    assert tuple(out[5, 15]) == (255, 255, 255)  # edge of the selected mask
    assert out[15, 15, 0] > out[15, 15, 1]  # selected mask painted above the later one


def test_outlines_follow_mask_edges():
    image = np.zeros((20, 20, 3), np.uint8)
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    out = overlay(image, [rle_utils.encode(m)], colors=[(200, 100, 50)], alpha=0.5, outlines=True)
    assert tuple(out[5, 10]) == (200, 100, 50) and tuple(out[10, 5]) == (200, 100, 50)
    assert tuple(out[10, 10]) == (100, 50, 25)  # interior: blended
    assert tuple(out[4, 10]) == (0, 0, 0)


def test_label_map_cache_reuses_work_and_follows_edits(scene):
    image, masks, rles = scene
    cache = LabelMapCache()
    first = overlay(image, rles, cache=cache)
    again = overlay(image, rles, cache=cache, alpha=0.3, outlines=True)
    assert cache.misses == 1 and cache.hits == 1
    assert np.array_equal(first, overlay(image, rles))
    edited = list(rles)
    edited[3] = rle_utils.encode(~masks[3])
    assert not np.array_equal(overlay(image, edited, cache=cache), first)
    assert cache.misses == 2
    assert not np.array_equal(again, first)


def test_render_document_colors_by_id_and_marks_states(scene):
    image, masks, _ = scene
    doc = AnnotationDocument(*image.shape[:2])
    ids = doc.add_many(list(masks[:6]))
    doc.reject([ids[1]])
    doc.set_visible([ids[2]], False)
    doc.select([ids[3]])
    renderer = Renderer()
    out = renderer.render(image, doc, outlines=True)
    anns = doc.annotations
    ref = overlay(
        image, [a.rle for a in anns], colors=palette(ids), outlines=True, selected=[3], hidden=[2], rejected=[1]
    )
    assert np.array_equal(out, ref)
    # deleting a mask keeps every other mask's color
    doc.clear_selection()
    solo = masks[5] & ~masks[:5].any(axis=0)
    before = renderer.render(image, doc)[solo]
    doc.delete([ids[0]])
    assert np.array_equal(renderer.render(image, doc)[solo], before)
    hidden_only = masks[2] & ~np.delete(masks[:6], 2, axis=0).any(axis=0)
    out = render_document(image, doc, show_hidden=False)
    assert np.array_equal(out[hidden_only], image[hidden_only])


def test_overlay_rejects_bad_input(scene):
    image, masks, rles = scene
    with pytest.raises(ValueError, match="masks must be"):
        overlay(image, masks[:, :10])
    with pytest.raises(ValueError, match="colors must be"):
        overlay(image, rles, colors=[(1, 2, 3)] * 3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        overlay(image, rles, alpha=1.5)
    with pytest.raises(IndexError, match="selected"):
        overlay(image, rles, selected=[len(rles)])
    with pytest.raises(ValueError, match="image is"):
        overlay(image[:50], rles)
    bad = dict(rles[0], counts=rle_utils.encode(masks[0][:100])["counts"])  # runs of a smaller mask
    with pytest.raises(ValueError, match="mask 0: RLE counts do not cover"):
        overlay(image, [bad])
    # uncompressed RLEs and single dense masks are accepted too
    runs = rle_utils.run_lengths(rles[1]["counts"]).tolist()
    assert np.array_equal(overlay(image, [{"size": list(image.shape[:2]), "counts": runs}]), overlay(image, [rles[1]]))
    assert np.array_equal(overlay(image, masks[1]), overlay(image, [rles[1]]))


def test_palette_is_stable_and_distinct():
    p = palette(range(50))
    assert p.shape == (50, 3) and p.dtype == np.uint8
    assert np.array_equal(palette([7, 3]), p[[7, 3]])
    assert len({tuple(c) for c in p}) == 50


# -- figures ------------------------------------------------------------------------------------
def test_figures_are_written_as_png(tmp_path, scene):
    image, masks, rles = scene
    scores = np.linspace(0.5, 0.99, len(rles))
    paths = [
        figures.mask_grid(
            image,
            rles,
            tmp_path / "grid.png",
            scores={"predicted_iou": scores, "stability_score": scores[::-1]},
            max_masks=8,
        ),
        figures.size_views(image, masks, tmp_path / "sizes.png"),
        figures.quality_views(image, rles, scores, tmp_path / "quality.png", k=3),
        figures.containment_heatmap(rles[:12], tmp_path / "containment.png", labels=[str(i) for i in range(12)]),
    ]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150
            assert np.asarray(im.convert("L")).std() > 5  # not blank
    with pytest.raises(ValueError, match="values for"):
        figures.quality_views(image, rles, scores[:3], tmp_path / "bad.png")
