"""The prompted segmenter against segment_anything's own SamPredictor on the same weights."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from annotator.models.checkpoints import load_sam
from annotator.models.embeddings import EmbeddingCache
from annotator.models.predictor import SamSegmenter
from annotator.testing import TINY

# (points, labels, box) in truck.jpg pixels (1800x1200): the truck, its wheel, the window.
PROMPTS = {
    "one point": ([[900, 600]], [1], None),
    "points pos+neg": ([[500, 375], [1125, 625], [1300, 800]], [1, 1, 0], None),
    "box": (None, None, [425, 600, 700, 875]),
    "box + points": ([[575, 750], [600, 600]], [1, 0], [425, 600, 700, 875]),
}


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


@pytest.fixture(scope="module")
def official(tiny_checkpoint, truck):
    predictor = SamPredictor(load_sam(TINY, tiny_checkpoint))
    predictor.set_image(truck)
    return predictor


@pytest.fixture(scope="module")
def ours(tiny_checkpoint, truck):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu")
    seg.set_image(truck)
    return seg


@pytest.mark.parametrize("name", PROMPTS)
@pytest.mark.parametrize("multimask", [True, False])
def test_same_masks_and_scores_as_sam_predictor(official, ours, name, multimask):
    points, labels, box = PROMPTS[name]
    args = dict(
        point_coords=None if points is None else np.array(points, float),
        point_labels=None if labels is None else np.array(labels),
        box=None if box is None else np.array(box, float),
        multimask_output=multimask,
    )
    m_ref, s_ref, lr_ref = official.predict(**args)
    pred = ours.predict(**args)
    assert pred.masks.shape == m_ref.shape == (3 if multimask else 1, 1200, 1800)
    assert pred.masks.dtype == bool
    np.testing.assert_allclose(pred.scores, s_ref, atol=1e-4)
    np.testing.assert_allclose(pred.low_res_logits, lr_ref, atol=1e-3)
    for ours_mask, ref_mask in zip(pred.masks, m_ref):
        # fused attention reorders float sums: only pixels whose logit is ~0 may flip
        assert iou(ours_mask, ref_mask) > 0.999
        assert (ours_mask != ref_mask).mean() < 1e-4


def test_refining_with_previous_logits_matches(official, ours):
    points, labels = np.array([[900.0, 600.0]]), np.array([1])
    _, scores, logits = official.predict(points, labels)
    best = int(np.argmax(scores))
    more_pts, more_lbl = np.array([[900.0, 600.0], [1300.0, 800.0]]), np.array([1, 0])
    m_ref, s_ref, _ = official.predict(more_pts, more_lbl, mask_input=logits[best][None], multimask_output=False)
    first = ours.predict(points, labels)
    pred = ours.predict(more_pts, more_lbl, mask_input=first.low_res_logits[first.best()][None], multimask_output=False)
    np.testing.assert_allclose(pred.scores, s_ref, atol=1e-4)
    assert iou(pred.masks[0], m_ref[0]) > 0.999


def test_unfused_path_matches_the_official_one(tiny_checkpoint, official, truck):
    """The unfused path runs the official operations; the CPU's kernels may still round
    differently, so equal up to rounding (tighter than the fused path's tolerance)."""
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu", fused=False)
    emb = seg.embed(truck)
    torch.testing.assert_close(
        emb.features, official.features, rtol=1e-5, atol=1e-5 * official.features.abs().max().item()
    )
    m_ref, s_ref, _ = official.predict(np.array([[900.0, 600.0]]), np.array([1]))
    pred = seg.predict(np.array([[900.0, 600.0]]), np.array([1]), embedding=emb)
    np.testing.assert_allclose(pred.scores, s_ref, rtol=0, atol=1e-5)
    for ours_mask, ref_mask in zip(pred.masks, m_ref):
        assert (ours_mask != ref_mask).mean() < 1e-4 and iou(ours_mask, ref_mask) > 0.999


def test_fused_encoder_matches_official_features(ours, official):
    ref = official.features
    got = ours.embedding.features
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_second_set_image_skips_the_encoder(tiny_checkpoint, truck, dog):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu")
    calls = []
    seg.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    first = seg.set_image(truck)
    assert len(calls) == 1 and seg.is_cached(truck)
    again = seg.set_image(truck.copy())  # same pixels, different array object
    assert len(calls) == 1 and again is first
    seg.set_image(dog)
    assert len(calls) == 2
    assert seg.cache.hits == 1


def test_embedding_cache_is_lru_bounded_by_bytes(tiny_checkpoint, truck):
    one = 256 * 64 * 64 * 4
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu", cache=EmbeddingCache(2 * one))
    images = [truck[: 200 + i, :300] for i in range(3)]
    keys = [seg.embed(im).key for im in images]
    assert len(seg.cache) == 2 and seg.cache.nbytes == 2 * one
    assert keys[0] not in seg.cache and keys[1] in seg.cache and keys[2] in seg.cache


def test_bf16_encoder_stays_close_to_fp32(tiny_checkpoint, truck, ours):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu", precision="bf16")
    seg.set_image(truck)
    assert seg.embedding.features.dtype == torch.float32  # the decoder always sees fp32
    for points, labels, box in PROMPTS.values():
        args = (
            None if points is None else np.array(points, float),
            labels,
            None if box is None else np.array(box, float),
        )
        a, b = seg.predict(*args), ours.predict(*args)
        best = b.best()
        assert iou(a.masks[best], b.masks[best]) > 0.95


def test_any_image_size_and_prompts_outside(tiny_checkpoint):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu")
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (37, 2000, 3), (3000, 41, 3), (64, 64)]:
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        seg.set_image(image)
        pred = seg.predict(np.array([[5.0, 5.0], [-20.0, 1e4]]), np.array([1, 0]))
        assert pred.masks.shape == (3,) + shape[:2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "at least one point or a box"),
        (dict(box=[10, 10, 10, 50]), "no area"),
        (dict(box=[5000, 5000, 6000, 6000]), "no area"),
        (dict(point_coords=[[1, 2]]), "point_labels"),
        (dict(point_coords=[[1, 2]], point_labels=[2]), "must be 1"),
        (dict(point_coords=[[np.nan, 2]], point_labels=[1]), "finite"),
    ],
)
def test_bad_prompts_get_clear_errors(ours, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ours.predict(**kwargs)


def test_predict_before_image_is_an_error(tiny_checkpoint):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu")
    with pytest.raises(RuntimeError, match="set an image"):
        seg.predict([[1, 1]], [1])
