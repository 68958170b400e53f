"""EmbeddingDecoder (the mask decoder laid out for a CPU, bound to one image) against SAM's own
prompt encoder and mask decoder, for every kind of prompt a click makes."""

import numpy as np
import pytest
import torch

from annotator.models.modeling.attention import unfuse_attention
from annotator.models.modeling.mask_decoder import MULTIMASK, SINGLE, EmbeddingDecoder, sparse_embeddings
from annotator.models.predictor import DECODED_IMAGES, SamSegmenter
from annotator.testing import random_sam


@pytest.fixture(scope="module")
def sam():
    return unfuse_attention(random_sam("vit_t", seed=0).eval())  # the official modules


@pytest.fixture(scope="module")
def features():
    return torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))


def official(sam, features, points=None, box=None, mask=None, multimask=True):
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=points, boxes=box, masks=mask)
        return sam.mask_decoder(
            image_embeddings=features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )


def as_decoder_inputs(points=None, box=None):
    """Points and a box as EmbeddingDecoder takes them: box corners labelled 2 / 3, and the
    padding point PromptEncoder adds when there is no box."""
    coords, labels = [], []
    if points is not None:
        coords.append(points[0]), labels.append(points[1].float())
    if box is None:
        coords.append(torch.zeros(1, 1, 2)), labels.append(-torch.ones(1, 1))
    else:
        coords.append(box.reshape(1, 2, 2)), labels.append(torch.tensor([[2.0, 3.0]]))
    return torch.cat(coords, 1), torch.cat(labels, 1)


PROMPTS = {
    "one point": dict(points=(torch.tensor([[[500.0, 300.0]]]), torch.tensor([[1]]))),
    "points": dict(points=(torch.tensor([[[500.0, 300.0], [120.0, 800.0], [900, 40]]]), torch.tensor([[1, 0, 1]]))),
    "box": dict(box=torch.tensor([[100.0, 200.0, 700.0, 650.0]])),
    "box and points": dict(
        points=(torch.tensor([[[300.0, 400.0], [650.0, 600.0]]]), torch.tensor([[1, 0]])),
        box=torch.tensor([[100.0, 200.0, 700.0, 650.0]]),
    ),
}


@pytest.mark.parametrize("name", list(PROMPTS))
@pytest.mark.parametrize("with_mask", [False, True])
def test_the_decoder_matches_sams_own_for_every_prompt(sam, features, name, with_mask):
    prompt = PROMPTS[name]
    mask = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(5)) * 4 if with_mask else None
    coords, labels = as_decoder_inputs(**prompt)
    with torch.no_grad():
        sparse = sparse_embeddings(sam.prompt_encoder, coords, labels)
        ref_sparse, _ = sam.prompt_encoder(points=prompt.get("points"), boxes=prompt.get("box"), masks=None)
        torch.testing.assert_close(sparse, ref_sparse, atol=1e-5, rtol=1e-5)
        dense = None if mask is None else sam.prompt_encoder.mask_downscaling(mask)
        decoder = EmbeddingDecoder(sam, features)
        for multimask, outputs in ((True, MULTIMASK), (False, SINGLE)):
            ref_low, ref_iou = official(sam, features, **prompt, mask=mask, multimask=multimask)
            low, iou = decoder.decode(sparse, dense, outputs)
            assert low.shape == ref_low.shape and iou.shape == ref_iou.shape
            scale = float(ref_low.abs().max())
            assert float((low - ref_low).abs().max()) <= 1e-4 * scale
            assert float((iou - ref_iou).abs().max()) <= 1e-4
            # the masks themselves: the same pixels but for ones within rounding of the threshold
            assert float(((low > 0) == (ref_low > 0)).float().mean()) >= 0.9999


def test_a_batch_on_one_image_is_each_prompt_alone_and_the_image_work_is_done_once(sam, features):
    points = torch.tensor([[[500.0, 300.0]], [[20.0, 900.0]], [[640.0, 640.0]]])
    coords = torch.cat([points, torch.zeros(3, 1, 2)], 1)
    labels = torch.tensor([[1.0, -1.0]] * 3)
    decoder = EmbeddingDecoder(sam, features)
    with torch.no_grad():
        sparse = sparse_embeddings(sam.prompt_encoder, coords, labels)
        assert decoder._shared is None  # nothing of the image computed before a prompt needs it
        low, iou = decoder.decode(sparse)
        shared = decoder._shared
        for i in range(3):
            one_low, one_iou = decoder.decode(sparse[i : i + 1])
            torch.testing.assert_close(one_low[0], low[i], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(one_iou[0], iou[i], atol=1e-5, rtol=1e-5)
        assert decoder._shared is shared  # reused, not recomputed per call
        # a mask fed back makes the image side per prompt: the shared part is not needed
        fresh = EmbeddingDecoder(sam, features)
        fresh.decode(sparse[:1], sam.prompt_encoder.mask_downscaling(torch.zeros(1, 1, 256, 256)), SINGLE)
        assert fresh._shared is None


def test_the_segmenter_keeps_a_decoder_for_the_last_few_images_only():
    seg = SamSegmenter(random_sam("tiny", seed=0), device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8) for i in range(DECODED_IMAGES + 2)]
    embeddings = [seg.embed(im) for im in images]
    for emb in embeddings:
        seg.predict_candidates(np.array([[10.0, 10.0]]), np.array([1]), embedding=emb)
    assert list(seg._decoders) == [e.key for e in embeddings[-DECODED_IMAGES:]]
    kept = seg._decoders[embeddings[-1].key]
    seg.predict_candidates(np.array([[20.0, 15.0]]), np.array([1]), embedding=embeddings[-1])
    assert seg._decoders[embeddings[-1].key] is kept  # a second click on the image reuses its decoder


def test_prepare_does_the_images_decoder_work_before_the_first_click():
    seg = SamSegmenter(random_sam("tiny", seed=0), device="cpu")
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    emb = seg.embed(image)
    cold = seg.predict_candidates(np.array([[10.0, 12.0]]), np.array([1]), embedding=emb)
    seg._decoders.clear()
    seg.prepare(emb)
    decoder = seg._decoders[emb.key]
    assert decoder._shared is not None  # done ahead
    warm = seg.predict_candidates(np.array([[10.0, 12.0]]), np.array([1]), embedding=emb)
    assert seg._decoders[emb.key] is decoder  # the click used it
    np.testing.assert_allclose(warm.low_res_logits, cold.low_res_logits, atol=1e-4)
