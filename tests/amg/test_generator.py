"""Automatic mask generation: the same masks as segment_anything's SamAutomaticMaskGenerator on
the same weights, plus progress, cancellation and streaming.

The official generator runs on one seeded random tiny SAM and ours on a second instance built
from the same seed (building our generator fuses attention in place). Random weights give
near-zero logits and predicted IoUs, so the default thresholds keep nothing; a "calibrated"
copy scales the mask logits and shifts the IoU head so that the default thresholds keep some
masks and drop others.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from amg_parity import EVERY_CANDIDATE, assert_parity
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import (
    batched_mask_to_box,
    calculate_stability_score,
    coco_encode_rle,
    mask_to_rle_pytorch,
    uncrop_masks,
)

from annotator.amg.generator import Cancelled, MaskGenerator, Progress, Update, uncompressed_rle
from annotator.amg.postprocess import (
    CropFrame,
    boxes_from_transposed,
    encode_transposed,
    rle_boxes,
    upscale_transposed,
)
from annotator.amg.stability import axis_map, count_above, stability_from_low_res
from annotator.models.modeling.mask_decoder import EmbeddingDecoder
from annotator.models.predictor import SamSegmenter
from annotator.testing import random_sam


def calibrated_sam(seed: int = 0):
    """Random tiny SAM made to give masks that look more like SAM's: the upscaling head's
    transposed convolutions share one kernel tap (no 4x4 checkerboard, so masks follow the
    image), mask logits are scaled x3000 and predicted IoUs shifted by +0.86, so SAM's default
    thresholds (IoU 0.88, stability 0.95) keep some candidates and drop others."""
    model = random_sam("tiny", seed)
    with torch.no_grad():
        up = model.mask_decoder.output_upscaling
        for conv in (up[0], up[3]):
            conv.weight.copy_(conv.weight[:, :, :1, :1].expand_as(conv.weight))
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(3000.0)
            mlp.layers[-1].bias.mul_(3000.0)
        model.mask_decoder.iou_prediction_head.layers[-1].bias.add_(0.86)
    return model


def discs_image():
    """Four dark discs on a light background: unlike on the photos, where random-weight masks
    spread over whole crops and the crop-edge filter drops them, masks found in the crops here
    survive, so crop-layer results and the cross-crop NMS are compared too."""
    yy, xx = np.mgrid[:400, :600]
    image = np.full((400, 600, 3), 230, np.uint8)
    for cx, cy in [(90, 70), (510, 70), (90, 330), (510, 330)]:
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < 25**2] = 10
    return image


def run_both(image, make_model=lambda: random_sam("tiny", 0), **kwargs):
    kwargs.setdefault("output_mode", "coco_rle")
    kwargs.setdefault("points_per_batch", 16)  # faster on CPU for the official code; masks do not depend on it
    official = SamAutomaticMaskGenerator(make_model(), **kwargs).generate(image)
    ours = MaskGenerator(make_model(), **kwargs).generate(image)
    return official, ours


@pytest.fixture(scope="module")
def every_candidate(dog):
    return run_both(dog, points_per_side=8, **EVERY_CANDIDATE)


def test_parity_every_candidate_survives(every_candidate):
    official, ours = every_candidate
    assert len(official) == 3 * 64  # nothing filtered: every (point, mask) pair is compared
    assert_parity(official, ours)
    # each official mask against ours from the same point: the same mask up to float rounding
    # (which pixels flip depends on the CPU's kernels, so no bit-identity is asked), and the
    # box, area and crop box that go with it
    ious = mask_utils.iou([r["segmentation"] for r in official], [r["segmentation"] for r in ours], [0] * len(ours))
    points = np.array([r["point_coords"][0] for r in ours])
    agree = 0
    for i, a in enumerate(official):
        same_point = np.flatnonzero(np.abs(points - a["point_coords"][0]).max(axis=1) <= 1e-3)
        assert same_point.size, f"no mask of ours from point {a['point_coords'][0]}"
        b = ours[same_point[np.argmax(ious[i, same_point])]]
        if ious[i, same_point].max() < 0.98:
            continue
        agree += 1
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
        assert abs(a["stability_score"] - b["stability_score"]) <= 1e-3
        assert a["crop_box"] == b["crop_box"]
        assert abs(a["area"] - b["area"]) <= 0.02 * a["area"]
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 2  # rounding moves a box by a pixel or so
    assert agree >= 0.99 * len(official), f"{agree} of {len(official)} masks agree"


def test_parity_default_thresholds_with_crops(dog):
    """SAM's default thresholds with a crop layer on a real photo (box NMS off, so that the
    thresholds decide what is compared; the photo's crop masks all touch crop edges and go)."""
    official, ours = run_both(
        dog,
        make_model=calibrated_sam,
        points_per_side=6,
        crop_n_layers=1,
        crop_n_points_downscale_factor=3,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
    )
    assert 15 <= len(official) <= 90  # of 108 full-image candidates: the thresholds kept some, dropped some
    assert_parity(official, ours)


def test_parity_all_defaults_crops_keep_masks():
    """Every default but the grid, with a crop layer: masks from the crops survive the
    crop-edge filter, the box NMS and the cross-crop NMS."""
    official, ours = run_both(
        discs_image(),
        make_model=calibrated_sam,
        points_per_side=4,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
    )
    from_crops = [r for r in official if r["crop_box"] != [0, 0, 600, 400]]
    assert len(from_crops) >= 3 and len(official) > len(from_crops)
    assert_parity(official, ours)


def test_parity_point_grids_and_small_regions(dog):
    grid = np.array([[0.1, 0.1], [0.5, 0.5], [0.9, 0.2], [0.3, 0.8], [0.75, 0.6], [0.02, 0.98]])
    official, ours = run_both(
        dog,
        make_model=calibrated_sam,
        points_per_side=None,
        point_grids=[grid],
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        min_mask_region_area=400,
    )
    assert len(official) >= 12
    assert_parity(official, ours)
    plain = MaskGenerator(
        calibrated_sam(),
        points_per_side=None,
        point_grids=[grid],
        output_mode="coco_rle",
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    ).generate(dog)
    assert sorted(r["area"] for r in plain) != sorted(r["area"] for r in ours)  # regions were removed


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle"])
def test_output_modes_match_official(dog, mode):
    grid = np.array([[0.2, 0.3], [0.6, 0.7]])
    official, ours = run_both(dog, points_per_side=None, point_grids=[grid], output_mode=mode, **EVERY_CANDIDATE)
    assert len(official) == len(ours) == 6
    for a, b in zip(official, ours):
        if mode == "binary_mask":
            assert b["segmentation"].dtype == bool and b["segmentation"].shape == dog.shape[:2]
            assert (a["segmentation"] != b["segmentation"]).sum() <= 0.001 * a["segmentation"].size
        else:
            assert b["segmentation"]["size"] == a["segmentation"]["size"] == list(dog.shape[:2])
            assert sum(b["segmentation"]["counts"]) == dog.shape[0] * dog.shape[1]
            assert abs(b["area"] - a["area"]) <= 0.001 * a["segmentation"]["size"][0] * a["segmentation"]["size"][1]


def test_coco_rle_loads_in_pycocotools(every_candidate, dog):
    _, ours = every_candidate
    for rec in ours[:20]:
        rle = rec["segmentation"]
        assert isinstance(rle["counts"], str)
        mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert mask.shape == dog.shape[:2]
        assert int(mask.sum()) == rec["area"]
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_uncompressed_rle_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(5, 4), (1, 1), (37, 91)]:
        for fill in (0.0, 0.5, 1.0):
            mask = rng.random(shape) < fill
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            flat = uncompressed_rle(rle)
            assert flat == mask_to_rle_pytorch(torch.as_tensor(mask)[None])[0]


# -- components against the official code ------------------------------------------------------


def test_point_decoder_matches_official_decoder(dog):
    model = random_sam("tiny", 3)
    seg = SamSegmenter(random_sam("tiny", 3), device="cpu", fused=False)
    emb = seg.embed(dog)
    points = torch.tensor([[[10.0, 20.0]], [[500.0, 300.0]], [[1000.0, 680.0]]], dtype=torch.float64)
    labels = torch.ones((3, 1), dtype=torch.int)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        ref_low, ref_iou = model.mask_decoder(
            emb.features, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
        )
        dec = EmbeddingDecoder(model, emb.features)
        low, iou = dec.decode(sparse)
        tokens, keys = dec.transformer(sparse)
        low_t = dec.masks(tokens, keys, transpose=True)
    assert low.shape == ref_low.shape == (3, 3, 256, 256)
    assert torch.allclose(low, ref_low, atol=1e-5, rtol=0)
    assert torch.allclose(iou, ref_iou, atol=1e-5, rtol=0)
    assert torch.equal(low_t, low.transpose(-1, -2))


@pytest.mark.parametrize(
    "image_hw, crop_box",
    [
        ((1200, 1800), None),
        ((534, 800), None),
        ((600, 900), (100, 50, 700, 600)),
        ((37, 91), None),
        ((900, 300), (0, 0, 300, 500)),
    ],
)
def test_full_resolution_stats_match_official(image_hw, crop_box):
    H, W = image_hw
    crop_box = crop_box or (0, 0, W, H)
    ch, cw = crop_box[3] - crop_box[1], crop_box[2] - crop_box[0]
    scale = 1024 / max(ch, cw)
    input_hw = (int(ch * scale + 0.5), int(cw * scale + 0.5))
    frame = CropFrame(crop_box, (H, W), input_hw)
    model = random_sam("tiny", 0)
    low = torch.randn(5, 256, 256, generator=torch.Generator().manual_seed(H)) * 3
    ref = model.postprocess_masks(low[None], input_hw, (ch, cw))[0]
    mine_t = upscale_transposed(low.transpose(1, 2).contiguous(), frame)
    assert torch.allclose(mine_t.transpose(1, 2), ref, atol=1e-5, rtol=0)
    # the two upscalers differ by ~1e-6, so a pixel that close to a threshold (+-1) may count
    # differently: the scores may differ by what those pixels weigh, and no more
    near = ((ref - 1).abs() <= 1e-5) | ((ref + 1).abs() <= 1e-5)
    n_near, union = near.sum(dim=(1, 2)), (ref > -1).sum(dim=(1, 2))
    slack = 2 * (n_near + 1) / (union - n_near).clamp(min=1)
    stability_diff = (calculate_stability_score(mine_t, 0.0, 1.0) - calculate_stability_score(ref, 0.0, 1.0)).abs()
    assert (stability_diff <= slack).all(), (stability_diff, slack)
    bits = ref > 0
    bits_t = bits.transpose(1, 2).contiguous()
    assert torch.equal(boxes_from_transposed(bits_t), batched_mask_to_box(bits))
    uncropped = uncrop_masks(bits, list(crop_box), H, W)
    official_rles = [coco_encode_rle(r) for r in mask_to_rle_pytorch(uncropped)]
    ours = encode_transposed(bits_t.numpy().view(np.uint8), frame)
    assert [r["counts"].decode() for r in ours] == [r["counts"] for r in official_rles]
    assert np.array_equal(rle_boxes(ours), batched_mask_to_box(uncropped).numpy())
    assert [list(r["size"]) for r in ours] == [[H, W]] * 5


def smooth_logits(n, scale, seed):
    """Low-res logit maps with SAM-like structure: smooth blobs, clear of 0 away from edges."""
    x = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * scale
    return torch.nn.functional.interpolate(x, (256, 256), mode="bicubic", align_corners=False)[:, 0]


@pytest.mark.parametrize(
    "image_hw, crop_box",
    [
        ((1200, 1800), None),
        ((534, 800), None),
        ((600, 900), (100, 50, 700, 600)),
        ((37, 91), None),
        ((2000, 700), None),
    ],
)
def test_stability_counts_from_low_res_match_full_resolution(image_hw, crop_box):
    H, W = image_hw
    crop_box = crop_box or (0, 0, W, H)
    ch, cw = crop_box[3] - crop_box[1], crop_box[2] - crop_box[0]
    scale = 1024 / max(ch, cw)
    ih, iw = int(ch * scale + 0.5), int(cw * scale + 0.5)
    frame = CropFrame(crop_box, (H, W), (ih, iw))
    maps = (axis_map(256, 4, iw, cw), axis_map(256, 4, ih, ch))
    noise = torch.randn(2, 256, 256, generator=torch.Generator().manual_seed(5)) * 0.5
    faint = smooth_logits(2, 0.3, H)  # like random weights: clear of +-1 everywhere
    for low in (smooth_logits(4, 10.0, H), noise, faint, faint + 5.0):
        full = upscale_transposed(low, frame)
        for t in (-1.0, 0.0, 1.0, 4.0):
            exact = (full > t).sum(dim=(1, 2))
            # to float rounding: a pixel within ~1e-6 of the threshold may count differently
            assert (count_above(low, maps, [t])[0] - exact).abs().max() <= max(2, 1e-5 * ch * cw)
        ref = calculate_stability_score(full, 0.0, 1.0)
        mine = stability_from_low_res(low, maps, 0.0, 1.0, max_work=10**9)
        assert torch.allclose(mine, ref, atol=1e-5, rtol=0)
    # noise-like logits leave too many cells to evaluate one by one: the caller goes dense
    assert stability_from_low_res(noise, maps, 0.0, 0.2, max_work=1000) is None


def test_boxes_of_empty_and_one_pixel_masks():
    bits_t = torch.zeros((2, 7, 5), dtype=torch.bool)
    bits_t[1, 3, 2] = True
    expected = [[0, 0, 0, 0], [3, 2, 3, 2]]
    assert boxes_from_transposed(bits_t).tolist() == expected
    frame = CropFrame((0, 0, 7, 5), (5, 7), (731, 1024))
    assert rle_boxes(encode_transposed(bits_t.numpy().view(np.uint8), frame)).tolist() == expected


# -- engine, progress, cancellation, streaming -------------------------------------------------


@pytest.fixture(scope="module")
def small_generator():
    """12 points in 3 batches of 4, every candidate kept."""
    grid = np.random.default_rng(1).random((12, 2))
    return MaskGenerator(
        random_sam("tiny", 0),
        points_per_side=None,
        point_grids=[grid],
        points_per_batch=4,
        output_mode="coco_rle",
        **EVERY_CANDIDATE,
    )


def test_accepts_segmenter_and_reuses_its_embedding(dog, small_generator):
    seg = SamSegmenter(random_sam("tiny", 0), device="cpu")
    gen = MaskGenerator(
        seg,
        points_per_side=None,
        point_grids=small_generator.point_grids,
        points_per_batch=4,
        output_mode="coco_rle",
        **EVERY_CANDIDATE,
    )
    first = gen.generate(dog)
    assert len(seg.cache) == 1
    misses = seg.cache.misses
    assert gen.generate(dog) == first
    assert seg.cache.hits >= 1 and seg.cache.misses == misses  # no second encoding
    assert [r["segmentation"] for r in first] == [r["segmentation"] for r in small_generator.generate(dog)]


def test_progress_reports_batches_and_eta(dog, small_generator):
    seen: list[Progress] = []
    small_generator.generate(dog, progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 3]
    assert all(p.total == 3 and p.crops == 1 for p in seen)
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0 and seen[-1].fraction == 1.0
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(seen, seen[1:]))


def test_progress_counts_batches_of_every_crop(dog):
    gen = MaskGenerator(
        random_sam("tiny", 0),
        points_per_side=4,
        points_per_batch=8,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        output_mode="coco_rle",
    )
    seen = []
    gen.generate(dog, progress=seen.append)
    assert seen[-1].total == 2 + 4 * 1  # 16 points in 2 batches, then 4 crops of 4 points
    assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6, 6]
    assert [p.crop for p in seen[:-1]] == [0, 0, 1, 2, 3, 4]


def test_cancel_between_batches_raises_with_finished_masks(dog, small_generator):
    cancel = threading.Event()

    def progress(p):
        if p.done == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled after 2 of 3 batches") as info:
        small_generator.generate(dog, progress=progress, cancel=cancel)
    partial = info.value.records
    assert (info.value.done, info.value.total) == (2, 3)
    assert len(partial) == 3 * 8  # every candidate of the two finished batches of 4 points
    full = {(r["segmentation"]["counts"], tuple(r["point_coords"][0])) for r in small_generator.generate(dog)}
    assert {(r["segmentation"]["counts"], tuple(r["point_coords"][0])) for r in partial} < full


def test_cancel_before_start(dog, small_generator):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled) as info:
        small_generator.generate(dog, cancel=cancel)
    assert info.value.records == [] and info.value.done == 0


def test_iter_generate_streams_provisional_batches_then_the_result(dog, small_generator):
    updates: list[Update] = list(small_generator.iter_generate(dog))
    assert [u.final for u in updates] == [False, False, False, True]
    assert [u.progress.done for u in updates] == [1, 2, 3, 3]
    assert [len(u.records) for u in updates[:3]] == [12, 12, 12]
    final = updates[-1].records
    assert final == small_generator.generate(dog)
    provisional = {r["segmentation"]["counts"] for u in updates[:3] for r in u.records}
    assert {r["segmentation"]["counts"] for r in final} <= provisional


def test_iter_generate_dedups_only_in_the_final_update(dog):
    gen = MaskGenerator(
        random_sam("tiny", 0),
        points_per_side=4,
        points_per_batch=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    updates = list(gen.iter_generate(dog))
    provisional = sum(len(u.records) for u in updates if not u.final)
    assert provisional == 3 * 16
    assert len(updates[-1].records) < provisional  # box NMS (0.7) merged near-duplicates


def test_iter_generate_can_be_cancelled(dog, small_generator):
    cancel = threading.Event()
    it = small_generator.iter_generate(dog, cancel=cancel)
    first = next(it)
    assert not first.final and first.progress.done == 1
    cancel.set()
    with pytest.raises(Cancelled) as info:
        next(it)
    assert info.value.done == 1 and len(info.value.records) == 12


def test_bf16_autocast_runs_and_stays_close(dog):
    """The GPU option on CPU: bf16 encoder and decoder give nearly the fp32 masks."""
    grid = np.array([[0.2, 0.3], [0.6, 0.7], [0.8, 0.2]])
    kwargs = dict(points_per_side=None, point_grids=[grid], output_mode="coco_rle", **EVERY_CANDIDATE)
    fp32 = MaskGenerator(calibrated_sam(), **kwargs).generate(dog)
    bf16_gen = MaskGenerator(calibrated_sam(), precision="bf16", **kwargs)
    assert bf16_gen.precision == "bf16" and bf16_gen.segmenter.precision == "bf16"
    bf16 = bf16_gen.generate(dog)
    assert len(bf16) == len(fp32) == 9
    ious = mask_utils.iou([r["segmentation"] for r in fp32], [r["segmentation"] for r in bf16], [0] * 9)
    assert ious.max(axis=1).min() > 0.9  # about 0.98 here


def test_clear_errors():
    model = random_sam("tiny", 0)
    with pytest.raises(ValueError, match="exactly one of points_per_side or point_grids"):
        MaskGenerator(model, points_per_side=8, point_grids=[np.zeros((1, 2))])
    with pytest.raises(ValueError, match="output_mode"):
        MaskGenerator(model, output_mode="png")
    with pytest.raises(ValueError, match="crop_n_layers=1 needs 2"):
        MaskGenerator(model, points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1)
    with pytest.raises(TypeError, match="Sam or a SamSegmenter"):
        MaskGenerator(object())


def test_the_model_lock_is_held_for_model_calls_and_not_for_post_processing(monkeypatch):
    import annotator.amg.generator as amg

    class RecordingLock:
        held = False
        acquired = 0

        def __enter__(self):
            assert not self.held, "the lock is not reentrant"
            self.held = True
            self.acquired += 1

        def __exit__(self, *exc):
            self.held = False

    lock = RecordingLock()
    seen = []
    real = amg.masks_from_logits

    def post_processing(*args, **kwargs):
        seen.append(("post", lock.held))
        return real(*args, **kwargs)

    monkeypatch.setattr(amg, "masks_from_logits", post_processing)
    model = random_sam("tiny", seed=3)
    for name in ("image_encoder", "prompt_encoder"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.append((name, lock.held)))
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    gen = MaskGenerator(
        model,
        points_per_side=4,
        points_per_batch=4,
        decoder_batch_size=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        model_lock=lock,
    )
    unlocked = MaskGenerator(
        model, points_per_side=4, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    records = gen.generate(image)
    assert ("image_encoder", True) in seen and ("prompt_encoder", True) in seen
    assert all(held for name, held in seen if name != "post")
    assert ("post", False) in seen and ("post", True) not in seen
    # the encoder, the decoder's per-image part, then per point batch its prompt encoding and
    # each decoder sub-batch apart (a click waits for one sub-batch of 2 points, not a batch)
    assert lock.acquired == 2 + 4 * (1 + 2)
    same = unlocked.generate(image)
    assert [r["segmentation"].tolist() for r in records] == [r["segmentation"].tolist() for r in same]
