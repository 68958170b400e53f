"""The exported CPU runtimes against the official PyTorch SAM: parity, the export cache,
batches of prompts from several sessions, and lazily upscaled candidates."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from annotator.annotations.rle import encode as to_rle
from annotator.models.export import ExportCache, weights_key
from annotator.models.predictor import LazyPrediction, PromptSpec, SamSegmenter, _resize_logits
from annotator.models.runtime import available
from annotator.testing import random_sam

pytestmark = pytest.mark.skipif(not available("onnx"), reason="onnxruntime is not installed")

# (points, labels, box) in truck.jpg pixels (1800x1200)
PROMPTS = [
    ([[900, 600]], [1], None),
    ([[300, 200]], [1], None),
    ([[1500, 1000]], [1], None),
    ([[500, 375], [1125, 625], [1300, 800]], [1, 1, 0], None),
    (None, None, [425, 600, 700, 875]),
    ([[575, 750], [600, 600]], [1, 0], [425, 600, 700, 875]),
]


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def args_of(points, labels, box, multimask=True):
    return dict(
        point_coords=None if points is None else np.array(points, float),
        point_labels=None if labels is None else np.array(labels),
        box=None if box is None else np.array(box, float),
        multimask_output=multimask,
    )


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def runtime_cache(cache_root):
    return cache_root / "runtime"  # where load_segmenter puts it with ANNOTATOR_CACHE=cache_root


@pytest.fixture(scope="module")
def official(truck):
    predictor = SamPredictor(random_sam("tiny", seed=0))
    predictor.set_image(truck)
    return predictor


@pytest.fixture(scope="module")
def onnx_seg(truck, runtime_cache):
    seg = SamSegmenter(
        random_sam("tiny", seed=0), device="cpu", runtime="onnx", runtime_cache=runtime_cache, progress=False
    )
    seg.set_image(truck)
    return seg


def test_onnx_runtime_matches_the_official_model(official, onnx_seg):
    """The parity contract: >= 99% of candidates at IoU >= 0.98, scores within 1e-3."""
    ref = official.features
    assert float((onnx_seg.embedding.features - ref).abs().max() / ref.abs().max()) < 1e-4
    ious, score_err = [], []
    for points, labels, box in PROMPTS:
        for multimask in (True, False):
            args = args_of(points, labels, box, multimask)
            m_ref, s_ref, lr_ref = official.predict(**args)
            pred = onnx_seg.predict(**args)
            assert pred.masks.shape == m_ref.shape and pred.masks.dtype == bool
            ious += [iou(a, b) for a, b in zip(pred.masks, m_ref)]
            score_err.append(np.abs(pred.scores - s_ref).max())
            np.testing.assert_allclose(pred.low_res_logits, lr_ref, atol=1e-3)
    assert np.mean(np.array(ious) >= 0.98) >= 0.99, ious
    assert max(score_err) <= 1e-3


def test_refining_with_mask_input_matches_the_official_model(official, onnx_seg):
    args = args_of([[900, 600]], [1], None)
    _, s, low = official.predict(**args)
    refine = args_of([[900, 600], [1000, 700]], [1, 0], None, multimask=False)
    m_ref, s_ref, _ = official.predict(**refine, mask_input=low[np.argmax(s)][None])
    pred = onnx_seg.predict(**refine, mask_input=low[np.argmax(s)][None])
    assert iou(pred.masks[0], m_ref[0]) >= 0.98
    assert abs(pred.scores[0] - s_ref[0]) <= 1e-3


def test_export_is_cached_per_weights(runtime_cache, onnx_seg):
    cache = ExportCache(random_sam("tiny", seed=0), runtime_cache)
    assert cache.key == onnx_seg.engine.cache.key
    paths = cache.ensure(["encoder"], progress=False)
    stamp = {p: paths[p].stat().st_mtime_ns for p in paths}
    assert cache.missing(["encoder"]) == []
    cache.ensure(["encoder"], progress=False)  # nothing to build: files untouched
    assert {p: paths[p].stat().st_mtime_ns for p in paths} == stamp
    assert weights_key(random_sam("tiny", seed=1)) != cache.key


def test_parts_no_longer_used_are_removed_from_the_cache(tmp_path):
    cache = ExportCache(random_sam("tiny", seed=0), tmp_path)
    (cache.dir / "decoder").mkdir(parents=True)
    (cache.dir / "decoder" / "model.onnx").write_bytes(b"an exported decoder of before")
    (cache.dir / "encoder").mkdir()
    (cache.dir / "encoder" / "model.onnx").write_bytes(b"kept")  # present: nothing to build
    cache.ensure(["encoder"], progress=False)
    assert not (cache.dir / "decoder").exists()
    assert (cache.dir / "encoder" / "model.onnx").read_bytes() == b"kept"


def test_the_cache_key_covers_zero_dimensional_buffers():
    """vit_t (MobileSAM's TinyViT) has BatchNorm's 0-d ``num_batches_tracked``: the key is
    computed (it raised "cannot view Long as Byte", so vit_t could not use ONNX) and sees it."""
    model = random_sam("vit_t", seed=0)
    zero_d = [name for name, t in model.state_dict().items() if t.dim() == 0]
    assert zero_d, "vit_t has no 0-d tensor any more: this test no longer tests anything"
    key = weights_key(model)
    model.state_dict()[zero_d[0]].add_(1)
    assert weights_key(model) != key


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_prompts_of_several_sessions_decode_together_per_image(truck, dog, runtime, runtime_cache):
    """predict_many decodes the prompts alike on one image in one call (whatever the runtime:
    the decoder is PyTorch's EmbeddingDecoder) and gives what each prompt gives alone."""
    seg = SamSegmenter(
        random_sam("tiny", seed=0), device="cpu", runtime=runtime, runtime_cache=runtime_cache, progress=False
    )
    e_truck, e_dog = seg.embed(truck), seg.embed(dog)
    h, w = dog.shape[:2]
    specs = [
        PromptSpec(e_truck, np.array([[900.0, 600]]), np.array([1])),
        PromptSpec(e_dog, np.array([[w / 2, h / 2]]), np.array([1])),
        PromptSpec(e_truck, np.array([[300.0, 200]]), np.array([1]), multimask_output=False),
        PromptSpec(e_dog, None, None, box=np.array([10.0, 10, w / 2, h / 2])),
        PromptSpec(e_dog, np.array([[w / 3, h / 3], [w / 2, h / 2]]), np.array([1, 0]), multimask_output=False),
    ]
    calls = []
    decode = seg._decode_on_image
    seg._decode_on_image = lambda emb, inputs, *a: calls.append((emb.key, len(inputs))) or decode(emb, inputs, *a)
    many = seg.predict_many(specs)
    # on the dog, one point (+ padding) and a box are two tokens each, both for candidates: one
    # call; every other prompt differs in image, in wanting candidates, or in tokens
    assert sorted(calls) == sorted([(e_truck.key, 1), (e_dog.key, 2), (e_truck.key, 1), (e_dog.key, 1)])
    for spec, got in zip(specs, many):
        alone = seg.predict(
            spec.point_coords,
            spec.point_labels,
            spec.box,
            multimask_output=spec.multimask_output,
            embedding=spec.embedding,
        )
        assert got.masks.shape == alone.masks.shape
        np.testing.assert_allclose(got.scores, alone.scores, atol=1e-4)
        assert min(iou(a, b) for a, b in zip(got.masks, alone.masks)) >= 0.99


def test_a_bad_prompt_in_a_batch_is_refused_before_anything_runs(onnx_seg):
    emb = onnx_seg.embedding
    with pytest.raises(ValueError, match="labels"):
        onnx_seg.predict_many(
            [PromptSpec(emb, np.array([[1.0, 2]]), np.array([1])), PromptSpec(emb, np.array([[1.0, 2]]), np.array([7]))]
        )


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_lazy_candidates_match_the_full_resolution_path(truck, runtime, runtime_cache):
    """Only the shown candidate is upscaled, at the canvas's size; the mask read on accept
    is exactly the full-resolution path's, and so is the RLE kept."""
    seg = SamSegmenter(
        random_sam("tiny", seed=0), device="cpu", runtime=runtime, runtime_cache=runtime_cache, progress=False
    )
    seg.set_image(truck)
    args = args_of([[900, 600]], [1], None)
    full = seg.predict(**args)
    lazy = seg.predict_candidates(**args)
    assert isinstance(lazy, LazyPrediction)
    for i in range(len(full.masks)):
        np.testing.assert_array_equal(lazy.mask(i), full.masks[i])
        assert to_rle(lazy.mask(i)) == to_rle(full.masks[i])
    assert lazy._masks is None  # reading candidates one by one never upscaled them all
    np.testing.assert_array_equal(lazy.areas, full.masks.reshape(3, -1).sum(1))
    small = lazy.mask(0, (600, 900))
    assert small.shape == (600, 900)
    # the canvas's size: the same logits resized there (random weights make ragged masks, so
    # compare pixels, not IoU, with the full-resolution mask subsampled)
    assert (small == full.masks[0][::2, ::2]).mean() >= 0.9
    same_size = _resize_logits(torch.as_tensor(lazy.low_res_logits[None, :1]), (683, 1024), (1200, 1800))
    np.testing.assert_array_equal(same_size[0, 0].numpy() > 0, full.masks[0])
    np.testing.assert_array_equal(lazy.masks, full.masks)


def test_int8_encoder_runs_and_is_labelled(truck, runtime_cache, official):
    seg = SamSegmenter(
        random_sam("tiny", seed=0),
        device="cpu",
        runtime="onnx",
        precision="int8",
        runtime_cache=runtime_cache,
        progress=False,
    )
    emb = seg.embed(truck)
    assert emb.features.shape == official.features.shape
    assert torch.isfinite(emb.features).all()
    rel = float((emb.features - official.features).abs().max() / official.features.abs().max())
    assert 0 < rel < 0.5  # quantised: close, not equal


def test_unknown_or_unavailable_runtime_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown runtime"):
        SamSegmenter(random_sam("tiny"), device="cpu", runtime="tensorrt")
    with pytest.raises(ValueError, match="int8"):
        SamSegmenter(random_sam("tiny"), device="cpu", runtime="torch", precision="int8")


def test_onnx_is_the_default_on_a_cpu_and_the_kept_rle_is_the_full_resolution_one(
    tiny_checkpoint, truck, cache_root, monkeypatch, onnx_seg
):
    """The app on the default CPU runtime: a click shows one candidate at canvas size; the
    mask accepted is exactly what the full-resolution path (``predict``) gives."""
    from annotator.annotations.rle import normalize
    from annotator.app.workbench import Workbench
    from annotator.models.loading import load_segmenter

    monkeypatch.delenv("ANNOTATOR_RUNTIME", raising=False)
    monkeypatch.setenv("ANNOTATOR_CACHE", str(cache_root))
    seg, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    assert info.runtime == "onnx" and "ONNX Runtime" in info.status and seg.engine is not None
    wb = Workbench(seg, info)
    sid = "rle-check"
    wb.open_image(sid, truck, "truck.jpg")
    wb.encode(sid)
    wb.click(sid, 900, 600, "positive")
    prompt = wb.session(sid).prompt
    shown = prompt.order[prompt.choice]
    assert isinstance(prompt.prediction, LazyPrediction)
    wb.accept(sid)
    kept = wb.session(sid).doc.annotations[-1].rle
    full = seg.predict(np.array([[900.0, 600]]), np.array([1]), embedding=wb.session(sid).embedding)
    assert kept == normalize(full.masks[shown], kept["size"])


def test_areas_of_smooth_masks_come_from_the_low_res_logits(truck, onnx_seg):
    """Real masks are smooth blobs (random weights give ragged ones): their areas are counted
    from the low-res logits, exactly, with no candidate upscaled to full resolution."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    blobs = np.stack(
        [
            30 - np.hypot(yy - 80, xx - 120),
            60 - np.hypot(yy - 100, xx - 100),
            10 - np.abs(yy - 120) - np.abs(xx - 60) / 2,
        ]
    )
    emb = onnx_seg.embedding
    lazy = LazyPrediction(torch.as_tensor(blobs), np.zeros(3, np.float32), emb, onnx_seg.model.postprocess_masks, 0.0)
    areas = lazy.areas
    assert lazy._masks is None and not lazy._one
    full = onnx_seg.model.postprocess_masks(torch.as_tensor(blobs)[None], emb.input_size, emb.original_size)
    np.testing.assert_array_equal(areas, (full[0] > 0).sum(dim=(1, 2)).numpy())
