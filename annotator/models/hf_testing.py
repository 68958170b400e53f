"""Small random-weight SAM 2.1 and SAM 3 folders, in the Hugging Face layout, for tests and
benchmarks: no Hub access. Each is saved with ``save_pretrained`` (model and processor) and
then loaded back through the real loading code.

Initialisation leaves SAM's outputs close to 0 (tiny weights), where every mask is a coin
toss; ``spread_weights`` rescales the weights so logits and scores spread out, making the
comparisons in tests mean something.
"""

from __future__ import annotations

from pathlib import Path

import torch

# SAM 2: a 5-block Hiera (one block per stage, two in the third, whose second is global) on a
# 256-pixel input, 32-channel features and decoder.
TINY_SAM2_SIZE = 256
# SAM 3: transformers' own test sizes (hidden 32, one layer per part, 5 queries, 224 pixels).
TINY_SAM3_SIZE = 224
TINY_WORDS = ("car", "person", "dog", "visual")


def tiny_sam2_config(size: int = TINY_SAM2_SIZE):
    from transformers import Sam2Config

    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=16,
                num_attention_heads=1,
                image_size=[size, size],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[8, 4, 4, 4],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=size, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def tiny_sam3_config(size: int = TINY_SAM3_SIZE, vocab_size: int = 64):
    from transformers import Sam3Config

    vision = dict(
        backbone_config=dict(
            model_type="sam3_vit_model",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=size,
            patch_size=14,
            window_size=8,
            global_attn_indexes=[1],
        ),
        fpn_hidden_size=32,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
    )
    return Sam3Config(
        vision_config=vision,
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        geometry_encoder_config=dict(
            hidden_size=32,
            num_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            mask_fuser_hidden_size=32,
            mask_fuser_num_layers=1,
        ),
        detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=4, intermediate_size=64),
        detr_decoder_config=dict(
            hidden_size=32, num_layers=1, num_queries=5, num_attention_heads=4, intermediate_size=64
        ),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=2),
    )


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single letters (every word splits into letters, no merges):
    64 ids, enough for any lower-case text."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def shapes_image(h: int = 120, w: int = 200, seed: int = 0):
    """Two rectangles on a colour gradient, with a little noise: features differ across it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    img[20:70, 30:90] = (220, 40, 40)
    img[60:110, 120:180] = (30, 200, 60)
    return np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


@torch.no_grad()
def spread_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights of unit gain (matrices ~ N(0, 1/fan_in)), biases ~ N(0, 0.1), norms' scales
    around 1, so activations neither vanish nor explode and masks depend on the prompt."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def write_random_sam2(folder: str | Path, seed: int = 0, size: int = TINY_SAM2_SIZE) -> Path:
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    folder = Path(folder)
    torch.manual_seed(seed)
    model = spread_weights(Sam2Model(tiny_sam2_config(size)), seed).eval()
    model.save_pretrained(folder)
    Sam2Processor(Sam2ImageProcessor(size={"height": size, "width": size})).save_pretrained(folder)
    return folder


def write_random_sam3(folder: str | Path, seed: int = 0, size: int = TINY_SAM3_SIZE) -> Path:
    """A tiny SAM 3 folder laid out like ``facebook/sam3``: a ``sam3_video`` config holding the
    detector's and the tracker's, and one safetensors file with the detector under
    ``detector_model.``, the tracker's prompt encoder and decoder under ``tracker_model.`` and
    its neck under ``tracker_neck.``; the tracker shares the detector's ViT backbone (the
    layout transformers' own weight renaming for ``sam3_tracker`` reads)."""
    from safetensors.torch import save_file
    from transformers import Sam3ImageProcessor, Sam3Model, Sam3Processor, Sam3TrackerModel, Sam3VideoConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    detector_config = tiny_sam3_config(size)
    vision = detector_config.vision_config.to_dict()
    side = size // 14  # patches per side; the tracker's FPN levels are 4x, 2x and 1x that
    vision["backbone_feature_sizes"] = [[4 * side] * 2, [2 * side] * 2, [side] * 2]
    tracker_config = dict(
        image_size=size,
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=32, image_size=size, patch_size=14),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    config = Sam3VideoConfig(detector_config=detector_config.to_dict(), tracker_config=tracker_config)
    torch.manual_seed(seed)
    detector = spread_weights(Sam3Model(config.detector_config), seed).eval()
    tracker = spread_weights(Sam3TrackerModel(config), seed + 1).eval()
    tracker.vision_encoder.backbone.load_state_dict(detector.vision_encoder.backbone.state_dict())
    state = {"detector_model." + k: v for k, v in detector.state_dict().items()}
    for k, v in tracker.state_dict().items():
        if k.startswith("vision_encoder.backbone."):
            continue  # shared with the detector
        if k.startswith("vision_encoder.neck."):
            state["tracker_neck." + k[len("vision_encoder.neck.") :]] = v
        else:
            state["tracker_model." + k] = v
    config.save_pretrained(folder)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    Sam3Processor(Sam3ImageProcessor(size={"height": size, "width": size}), tiny_clip_tokenizer()).save_pretrained(
        folder
    )
    return folder
