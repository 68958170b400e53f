"""SAM 2.1 and SAM 3 through transformers: tiny random-weight folders, loaded through the real
loading code, give what the transformers model itself gives for the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from annotator.models import hf_testing  # noqa: E402
from annotator.models.checkpoints import CheckpointError  # noqa: E402
from annotator.models.hub import get_hub_model, resolve_hub_checkpoint  # noqa: E402
from annotator.models.loading import load_concept_finder, load_segmenter  # noqa: E402
from annotator.models.protocol import ConceptFinder, PointBatchPredictor, Predictor  # noqa: E402

_image = hf_testing.shapes_image


@pytest.fixture(scope="module")
def sam2(sam2_dir):
    return load_segmenter("sam2.1-tiny", str(sam2_dir), device="cpu")


def _reference_sam2(folder, image, tracker=False, **prompts):
    """What transformers itself computes: processor -> Sam2Model (or SAM 3's Sam3TrackerModel)
    -> post_process_masks."""
    from transformers import Sam2Model, Sam2Processor, Sam3TrackerModel, Sam3TrackerProcessor

    model_cls, proc_cls = (Sam3TrackerModel, Sam3TrackerProcessor) if tracker else (Sam2Model, Sam2Processor)
    model = model_cls.from_pretrained(str(folder)).eval()
    proc = proc_cls.from_pretrained(str(folder))
    multimask = prompts.pop("multimask_output", True)
    masks_in = prompts.pop("input_masks", None)
    inputs = proc(images=image, return_tensors="pt", **prompts)
    with torch.no_grad():
        out = model(**inputs, input_masks=masks_in, multimask_output=multimask)
    full = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=False)[0][0]
    return out.pred_masks[0, 0], out.iou_scores[0, 0], full


def _assert_same(pred, ref, atol=1e-4):
    low, iou, full = ref
    np.testing.assert_allclose(pred.low_res_logits, low.numpy(), atol=atol)
    np.testing.assert_allclose(pred.scores, iou.numpy(), atol=atol)
    full = full.numpy()
    clear = np.abs(full) > 1e-3  # pixels on the threshold may go either way
    assert (pred.masks[clear] == (full > 0)[clear]).all()
    assert clear.mean() > 0.95


def test_sam2_loads_from_a_folder_and_records_its_provenance(sam2, sam2_dir):
    predictor, info = sam2
    assert isinstance(predictor, Predictor) and isinstance(predictor, PointBatchPredictor)
    assert (info.backend, info.model, info.family, info.repo_id) == (
        "sam",
        "sam2.1-tiny",
        "sam2.1",
        "facebook/sam2.1-hiera-tiny",
    )
    assert info.revision is None and "from the folder" in info.status
    assert info.model_tag == "sam2.1-tiny (facebook/sam2.1-hiera-tiny@local folder)"


def test_sam2_points_box_and_mask_input_equal_transformers(sam2, sam2_dir):
    predictor, _ = sam2
    image = _image()
    emb = predictor.set_image(image)
    assert len(emb.features) == 3 and emb.nbytes == sum(f.numel() * 4 for f in emb.features)

    pts, lbl = [[60.0, 45.0], [150.0, 80.0]], [1, 0]
    pred = predictor.predict(np.array(pts), np.array(lbl))
    _assert_same(pred, _reference_sam2(sam2_dir, image, input_points=[[pts]], input_labels=[[lbl]]))
    assert pred.masks.shape == (3, 120, 200)
    # the three candidates differ (a wrapper returning one mask three times would not)
    assert len({m.tobytes() for m in pred.masks}) > 1

    box = [25.0, 15.0, 95.0, 75.0]
    pred_box = predictor.predict(box=np.array(box), multimask_output=False)
    _assert_same(pred_box, _reference_sam2(sam2_dir, image, input_boxes=[[box]], multimask_output=False))

    low = pred.low_res_logits[pred.best()][None]
    refined = predictor.predict(np.array(pts[:1]), np.array(lbl[:1]), mask_input=low, multimask_output=False)
    _assert_same(
        refined,
        _reference_sam2(
            sam2_dir,
            image,
            input_points=[[pts[:1]]],
            input_labels=[[lbl[:1]]],
            input_masks=torch.as_tensor(low)[None],
            multimask_output=False,
        ),
    )
    without = predictor.predict(np.array(pts[:1]), np.array(lbl[:1]), multimask_output=False)
    assert not np.allclose(refined.low_res_logits, without.low_res_logits, atol=1e-3)  # the mask counts


def test_sam2_embedding_cache_is_bounded_by_bytes(sam2_dir):
    from annotator.models.embeddings import EmbeddingCache
    from annotator.models.hf_sam2 import HFSamPredictor, load_hf_model

    model, proc = load_hf_model(sam2_dir, "sam2")
    one = HFSamPredictor(model, proc, device="cpu").embed(_image()).nbytes
    predictor = HFSamPredictor(model, proc, device="cpu", cache=EmbeddingCache(int(one * 1.5)))
    predictor.embed(_image(seed=1))
    predictor.embed(_image(seed=2))
    assert len(predictor.cache) == 1 and predictor.cache.nbytes == one
    assert predictor.is_cached(_image(seed=2)) and not predictor.is_cached(_image(seed=1))


def test_sam2_segment_everything_gives_the_predictors_masks(sam2):
    from annotator.amg.generator import MaskGenerator

    predictor, _ = sam2
    image = _image()
    gen = MaskGenerator(
        predictor,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        output_mode="binary_mask",
    )
    records = gen.generate(image)
    assert records and set(records[0]) >= {
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "point_coords",
        "stability_score",
        "crop_box",
    }
    for r in records[:6]:
        pred = predictor.predict(np.array(r["point_coords"]), np.array([1]))
        k = int(np.argmin(np.abs(pred.scores - r["predicted_iou"])))
        assert abs(pred.scores[k] - r["predicted_iou"]) < 1e-4
        inter = (pred.masks[k] & r["segmentation"]).sum()
        union = (pred.masks[k] | r["segmentation"]).sum()
        assert union == 0 or inter / union > 0.98
        assert r["area"] == r["segmentation"].sum()


def test_hub_offline_message_says_how_to_get_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    with pytest.raises(CheckpointError) as e:
        resolve_hub_checkpoint(get_hub_model("sam2.1-small"), progress=False)
    msg = str(e.value)
    assert "hf download facebook/sam2.1-hiera-small" in msg and "--checkpoint DIR" in msg
    with pytest.raises(CheckpointError) as e:
        resolve_hub_checkpoint(get_hub_model("sam3"), download=False)
    assert "gated" in str(e.value) and "HF_TOKEN" in str(e.value) and "huggingface.co/facebook/sam3" in str(e.value)


def test_hub_cache_is_used_offline_with_its_revision(tmp_path, monkeypatch, sam2_dir):
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--facebook--sam2.1-hiera-tiny"
    shutil.copytree(sam2_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    resolved = resolve_hub_checkpoint(get_hub_model("sam2.1-tiny"), download=False)
    assert resolved.source == "hub cache" and resolved.revision == commit
    _, info = load_segmenter("sam2.1-tiny", device="cpu", download=False)
    assert info.revision == commit and "revision 0123456" in info.status
    assert info.model_tag.endswith(f"@{commit[:12]})")


def test_a_folder_that_is_not_a_model_is_refused_clearly(tmp_path, sam3_dir):
    with pytest.raises(CheckpointError, match="not a Hugging Face model folder"):
        load_segmenter("sam2.1-tiny", str(tmp_path), device="cpu")
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint.*try --model sam3"):
        load_segmenter("sam2.1-tiny", str(sam3_dir), device="cpu")


# -- SAM 3 ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finder(sam3_dir):
    return load_concept_finder(sam3_dir, device="cpu")


@pytest.fixture(scope="module")
def sam3(sam3_dir):
    return load_segmenter("sam3", str(sam3_dir), device="cpu")


def test_sam3_clicks_use_its_tracker_and_equal_transformers(sam3, sam3_dir):
    predictor, info = sam3
    assert (info.family, info.concepts, info.repo_id) == ("sam3", True, "facebook/sam3")
    assert isinstance(predictor.finder, ConceptFinder)
    image = _image()
    predictor.set_image(image)
    pts, lbl = [[60.0, 45.0]], [1]
    pred = predictor.predict(np.array(pts), np.array(lbl))
    _assert_same(pred, _reference_sam2(sam3_dir, image, tracker=True, input_points=[[pts]], input_labels=[[lbl]]))
    box = [25.0, 15.0, 95.0, 75.0]
    pred_box = predictor.predict(box=np.array(box), multimask_output=False)
    _assert_same(pred_box, _reference_sam2(sam3_dir, image, tracker=True, input_boxes=[[box]], multimask_output=False))
    # segment everything runs on SAM 3's tracker too (its 1008-pixel input, 288x288 logits at real size)
    from annotator.amg.generator import MaskGenerator

    records = MaskGenerator(
        predictor, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    ).generate(image)
    assert len(records) == 12
    r = records[0]
    pred = predictor.predict(np.array(r["point_coords"]), np.array([1]))
    assert np.isclose(pred.scores, r["predicted_iou"], atol=1e-4).any()
    # the clicks' and the finder's encoder outputs are cached apart (same image key, other tensors)
    predictor.finder.embed(image)
    assert predictor.cache is not predictor.finder.cache


def _reference_sam3(folder, image, threshold, **prompts):
    from transformers import Sam3Model, Sam3Processor

    model = Sam3Model.from_pretrained(str(folder)).eval()
    proc = Sam3Processor.from_pretrained(str(folder))
    inputs = proc(images=image, return_tensors="pt", **prompts)
    with torch.no_grad():
        out = model(**inputs)
    return proc.post_process_instance_segmentation(out, threshold=threshold, target_sizes=[image.shape[:2]])[0]


def _assert_same_instances(found, ref):
    order = np.argsort(-ref["scores"].numpy(), kind="stable")
    assert len(found) == len(order) > 0
    np.testing.assert_allclose([i.score for i in found], ref["scores"].numpy()[order], atol=1e-4)
    np.testing.assert_allclose([i.box for i in found], ref["boxes"].numpy()[order], atol=1e-2)
    for inst, k in zip(found, order, strict=True):
        assert (inst.mask != ref["masks"][k].numpy().astype(bool)).mean() < 1e-3


def test_sam3_finds_all_by_text_and_by_exemplar_box_like_transformers(finder, sam3_dir):
    assert isinstance(finder, ConceptFinder)
    image = _image()
    found = finder.find_all(image, "car", threshold=0.0)
    _assert_same_instances(found, _reference_sam3(sam3_dir, image, 0.0, text="car"))
    assert [i.score for i in found] == sorted((i.score for i in found), reverse=True)

    box = [30.0, 20.0, 90.0, 70.0]
    by_box = finder.find_all(image, "car", boxes=[box], box_labels=[1], threshold=0.0)
    _assert_same_instances(
        by_box, _reference_sam3(sam3_dir, image, 0.0, text="car", input_boxes=[[box]], input_boxes_labels=[[1]])
    )
    assert not np.allclose([i.score for i in by_box], [i.score for i in found])  # the box counts
    only_box = finder.find_all(image, boxes=[box], threshold=0.0)
    _assert_same_instances(only_box, _reference_sam3(sam3_dir, image, 0.0, input_boxes=[[box]]))
    # a threshold keeps only what scores at least that
    cut = float(np.median([i.score for i in found]))
    assert all(i.score >= cut for i in finder.find_all(image, "car", threshold=cut))


def test_sam3_bad_concepts_get_a_message(finder):
    image = _image()
    with pytest.raises(ValueError, match="give a text"):
        finder.find_all(image, "  ")
    with pytest.raises(ValueError, match="no area"):
        finder.find_all(image, "car", boxes=[[10, 10, 10, 50]])
    with pytest.raises(ValueError, match="must be positive"):
        finder.find_all(image, boxes=[[10, 10, 50, 50]], box_labels=[0])


def test_each_family_reports_its_real_embedding_size_and_the_session_counts_it(sam2, sam3, tiny_checkpoint):
    """The session memory estimate counts the loaded model's own embedding: what its
    ``embedding_bytes`` says before any image is encoded equals what an encoding holds."""
    from annotator.app import memory
    from annotator.app.workbench import Workbench

    sam1 = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    image = hf_testing.shapes_image()
    sizes = {}
    for family, (predictor, info) in {"sam": sam1, "sam2.1": sam2, "sam3": sam3}.items():
        predictor.cache.clear()
        expected = predictor.embedding_bytes  # from the shapes alone: nothing encoded yet
        embedding = predictor.embed(image)
        assert expected == embedding.nbytes, family
        sizes[family] = expected
        if family != "sam":  # SAM 2.1 and SAM 3's tracker keep three feature maps
            assert len(embedding.features) == 3
        wb = Workbench(predictor, info, prefetch=False)
        wb.open_image("s", image, "shapes.png")
        s = wb.session("s")
        assert s.embedding_bytes == expected
        pixels = memory.image_bytes(image.shape[:2], s.scale, 0)
        assert wb.session_bytes("s") == pixels + expected + s.doc.nbytes()
    assert sizes["sam"] == 256 * 64 * 64 * 4  # the tiny SAM 1 has SAM's 1024-pixel input
    # not SAM 1's 4 MB: the tiny SAM 2.1 and SAM 3 folders have small inputs and features
    assert sizes["sam2.1"] < sizes["sam"] and sizes["sam3"] < sizes["sam"]
