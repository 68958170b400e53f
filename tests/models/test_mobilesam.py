"""MobileSAM (vit_t): our TinyViT loads upstream MobileSAM checkpoints and computes the same
embeddings, masks and scores as upstream's own predictor, on a real photo.

The upstream code (``mobile_sam``, packaged as ``mobilesam-mirror``, which needs ``timm``) is a
test-only dependency: it builds the reference model, the app never imports it.
"""

import warnings

import numpy as np
import pytest
import torch

from annotator.models.checkpoints import CheckpointError, guess_variant, load_sam, read_state_dict
from annotator.models.modeling.tinyvit import TinyViT, relative_offset_index
from annotator.models.predictor import SamSegmenter
from annotator.models.registry import VARIANTS
from annotator.testing import randomize_inert_parameters

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecated-import and registry-overwrite warnings
        from mobile_sam import SamPredictor as UpstreamPredictor
        from mobile_sam import sam_model_registry as upstream_registry
        from mobile_sam.modeling.tiny_vit_sam import Attention as UpstreamAttention
except ImportError as e:
    raise ImportError(f"{e}. The MobileSAM tests need the test extra: pip install -e '.[test]'") from e

VIT_T = VARIANTS["vit_t"]

PROMPTS = {
    "one point": dict(point_coords=[[500, 375]], point_labels=[1]),
    "points": dict(point_coords=[[500, 375], [1125, 625]], point_labels=[1, 0]),
    "box": dict(box=[425, 600, 700, 875]),
    "box and point": dict(point_coords=[[575, 750]], point_labels=[0], box=[425, 600, 700, 875]),
}


@pytest.fixture(scope="module")
def upstream_sam():
    """Upstream MobileSAM with seeded random weights (BatchNorm and attention-bias tables
    randomised too, so loading them is tested), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        model = upstream_registry["vit_t"]()
        randomize_inert_parameters(model)
    # eval() again: upstream caches its attention biases when switching to eval mode
    return model.eval()


@pytest.fixture(scope="module")
def upstream_checkpoint(upstream_sam, tmp_path_factory):
    path = tmp_path_factory.mktemp("mobilesam") / "mobile_sam.pt"
    torch.save(upstream_sam.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def upstream_predictor(upstream_sam, truck):
    predictor = UpstreamPredictor(upstream_sam)
    predictor.set_image(truck)
    return predictor


@pytest.fixture(scope="module")
def ours_plain(upstream_checkpoint, truck):
    """Ours, loaded from the upstream file through the real loader, with the hand-written
    attention (the same operations as upstream: equal up to float rounding, which the CPU's
    kernels decide, so no bit-identity is asked)."""
    segmenter = SamSegmenter(load_sam(VIT_T, upstream_checkpoint), fused=False, name="vit_t")
    segmenter.set_image(truck)
    return segmenter


def test_vit_t_is_registered_with_the_official_checkpoint():
    assert VIT_T.encoder == "tinyvit"
    assert VIT_T.url == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    assert VIT_T.filename == "mobile_sam.pt"
    assert VIT_T.sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    assert VIT_T.size_bytes == 40_728_226
    model = VIT_T.build()
    assert isinstance(model.image_encoder, TinyViT) and model.image_encoder.img_size == 1024
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 10.1  # MobileSAM's 10.1M


def test_state_dict_layout_matches_upstream(upstream_sam):
    ours = VIT_T.build().state_dict()
    theirs = upstream_sam.state_dict()
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]


@pytest.mark.parametrize("size", [(7, 7), (14, 14), (3, 5)])
def test_attention_bias_index_matches_upstream(size):
    upstream = UpstreamAttention(8, 4, num_heads=2, attn_ratio=1, resolution=size)
    assert torch.equal(relative_offset_index(*size), upstream.attention_bias_idxs)
    assert upstream.attention_biases.shape[1] == size[0] * size[1]


def test_upstream_checkpoint_gives_the_same_embedding(ours_plain, upstream_predictor):
    embedding = ours_plain.embedding
    assert embedding.input_size == tuple(upstream_predictor.input_size)
    assert embedding.original_size == tuple(upstream_predictor.original_size)
    ref = upstream_predictor.features
    torch.testing.assert_close(embedding.features, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_upstream_checkpoint_gives_the_same_masks_and_scores(ours_plain, upstream_predictor, prompt):
    upstream = {k: np.array(v) for k, v in prompt.items()}
    masks, scores, logits = upstream_predictor.predict(**upstream, multimask_output=True)
    ours = ours_plain.predict(**prompt, multimask_output=True)
    assert masks.shape == ours.masks.shape == (3, *ours_plain.embedding.original_size)
    assert 0 < masks.mean() < 1  # a real mask, not empty or everything
    # only pixels whose logit is within rounding of 0 may flip
    assert (ours.masks != masks).mean() < 1e-4
    np.testing.assert_allclose(ours.scores, scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.low_res_logits, logits, rtol=0, atol=1e-4)


def test_fused_attention_agrees_with_upstream(upstream_checkpoint, upstream_predictor, truck):
    """The app's default (SDPA attention) rounds differently, so equal up to a few pixels."""
    fused = SamSegmenter(load_sam(VIT_T, upstream_checkpoint), fused=True)
    fused.set_image(truck)
    torch.testing.assert_close(fused.embedding.features, upstream_predictor.features, rtol=0, atol=1e-4)
    for prompt in PROMPTS.values():
        masks, scores, _ = upstream_predictor.predict(**{k: np.array(v) for k, v in prompt.items()})
        ours = fused.predict(**prompt)
        assert (ours.masks != masks).mean() < 1e-4
        np.testing.assert_allclose(ours.scores, scores, rtol=0, atol=1e-5)


def test_checkpoint_mixups_name_the_right_model(upstream_checkpoint, tiny_checkpoint):
    state = read_state_dict(upstream_checkpoint)
    assert guess_variant(state, VARIANTS.values()) == "vit_t"
    assert guess_variant(read_state_dict(tiny_checkpoint), VARIANTS.values()) is None
    with pytest.raises(CheckpointError, match="not a SAM vit_b checkpoint.*try --model vit_t"):
        load_sam(VARIANTS["vit_b"], upstream_checkpoint)
    with pytest.raises(CheckpointError, match="not a SAM vit_t checkpoint.*missing") as e:
        load_sam(VIT_T, tiny_checkpoint)
    assert "try --model" not in str(e.value)  # a tiny test model is no official variant


def test_automatic_masks_match_upstream_generator(upstream_sam, upstream_checkpoint, dog):
    """Segment everything through annotator.amg.generator.MaskGenerator on our vit_t (loaded from the
    upstream file, fused attention) finds the masks upstream's own generator finds."""
    from amg_parity import EVERY_CANDIDATE, assert_parity
    from mobile_sam import SamAutomaticMaskGenerator as UpstreamGenerator

    from annotator.amg.generator import MaskGenerator

    params = dict(points_per_side=6, points_per_batch=12, output_mode="coco_rle", **EVERY_CANDIDATE)
    upstream = UpstreamGenerator(upstream_sam, **params).generate(dog)
    ours = MaskGenerator(SamSegmenter(load_sam(VIT_T, upstream_checkpoint), name="vit_t"), **params).generate(dog)
    assert len(upstream) == 6 * 6 * 3  # every candidate survives: all 108 are compared
    assert_parity(upstream, ours)
