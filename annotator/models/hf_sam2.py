"""SAM 2.1 (and SAM 3's click model) through Hugging Face ``transformers``, as a ``Predictor``.

``HFSamPredictor`` wraps a ``Sam2Model`` or a ``Sam3TrackerModel`` (the same prompt encoder and
mask decoder; SAM 3's image encoder) and computes what the model's own forward pass plus
``Sam2Processor.post_process_masks`` compute, split so that the image encoder runs once per
image:

- ``embed``: the processor's resize (to the encoder's square input, ignoring the aspect ratio,
  as SAM 2 does) and normalisation, then ``get_image_embeddings``: three feature maps (the two
  high-resolution ones already projected for the decoder), kept in the content-keyed
  ``EmbeddingCache`` (about 16 MB per image in fp32 for SAM 2.1);
- ``predict``: points and boxes scaled to the encoder input like the processor does, the
  model's forward pass on the cached features, then the low-res logits resized straight to the
  image size and thresholded at 0.

Differences from SAM 1 that the rest of the app sees: low-res logits are 256x256 for SAM 2.1
and 288x288 for SAM 3 (feed them back unchanged as ``mask_input``), and with one prompt and
``multimask_output=False`` SAM 2 picks its single mask by stability, not by the first token.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from annotator.annotations.pixels import as_rgb_array
from annotator.models.device import autocast_dtype, pick_device
from annotator.models.embeddings import EmbeddingCache, image_key
from annotator.models.predictor import Prediction, check_prompts

log = logging.getLogger(__name__)
MASK_THRESHOLD = 0.0  # logits above this are in the mask (SAM 2's and SAM 1's threshold)


@dataclass(frozen=True)
class MultiScaleEmbedding:
    """The image encoder's output for one image: SAM 2's three feature maps, finest first."""

    key: str
    features: tuple[torch.Tensor, ...]  # (1, C_i, H_i, W_i) float32 each
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]  # (H, W) of the image inside the encoder input (the whole square)

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.features)


def load_hf_model(path: str | Path, kind: str):
    """``(model, processor)`` from a Hugging Face folder. ``kind``: "sam2" (Sam2Model) or
    "sam3_tracker" (Sam3TrackerModel, from a SAM 3 checkpoint)."""
    from transformers import Sam2Model, Sam2Processor, Sam3TrackerModel, Sam3TrackerProcessor

    model_cls, processor_cls = {
        "sam2": (Sam2Model, Sam2Processor),
        "sam3_tracker": (Sam3TrackerModel, Sam3TrackerProcessor),
    }[kind]
    from annotator.models.checkpoints import CheckpointError
    from annotator.models.hub import check_model_type

    what = {"sam2": "SAM 2", "sam3_tracker": "SAM 3"}[kind]
    check_model_type(Path(path), kind, what)
    try:
        model, info = model_cls.from_pretrained(str(path), output_loading_info=True)
        processor = processor_cls.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is not a {what} checkpoint folder: {e}") from None
    missing = sorted(info.get("missing_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    if missing or mismatched:  # never run a half-random model
        problem = (
            f"{len(missing)} tensors missing (e.g. {missing[0]})"
            if missing
            else f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})"
        )
        raise CheckpointError(f"{path} is not a {what} checkpoint: {problem}")
    return model.eval(), processor


class HFSamPredictor:
    """Prompted segmentation with a ``transformers`` SAM 2-style model; see the module doc."""

    backend = "sam"
    mask_threshold = MASK_THRESHOLD
    upscale_directly = True

    def __init__(
        self,
        model,
        processor,
        *,
        device=None,
        precision: str = "fp32",
        cache: EmbeddingCache | None = None,
        name: str = "sam2.1",
    ):
        self.device = pick_device(str(device) if device is not None else None)
        self.precision = precision
        self._autocast = autocast_dtype(precision)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name = name
        self.embedding: MultiScaleEmbedding | None = None
        self._encoder_lock = threading.Lock()
        size = processor.image_processor.size
        self._input_hw = (int(size["height"]), int(size["width"]))

    @property
    def encoder_size(self) -> int:
        return self._input_hw[0]

    def input_hw(self, embedding) -> tuple[int, int]:
        return self._input_hw

    # -- image ---------------------------------------------------------------------------
    @functools.cached_property
    def embedding_bytes(self) -> int:
        """Bytes of one image's cached feature maps (float32), read off the model: the two
        high-resolution maps projected by the decoder's ``conv_s0``/``conv_s1`` and the
        last at the decoder's width, at ``backbone_feature_sizes`` (16 MB for SAM 2.1 at
        1024x1024, 21 MB for SAM 3's tracker at 1008x1008). A model laid out otherwise is
        measured by encoding a blank image once. (Not by running the encoder on fake tensors:
        transformers caches position tables by shape, and a fake one would stay there.)"""
        try:
            decoder = self.model.mask_decoder
            channels = (decoder.conv_s0.out_channels, decoder.conv_s1.out_channels, decoder.conv_s0.in_channels)
            sizes = self.model.backbone_feature_sizes
            return sum(c * int(h) * int(w) for c, (h, w) in zip(channels, sizes, strict=True)) * 4
        except (AttributeError, TypeError, ValueError) as e:
            log.info("embedding size of %s from a real encoding (%s: %s)", self.name, type(e).__name__, e)
            ih, iw = self._input_hw
            return self._encode(np.zeros((ih, iw, 3), np.uint8), "size probe").nbytes

    def is_cached(self, image: np.ndarray) -> bool:
        return image_key(as_rgb_array(image)) in self.cache

    def embed(self, image: np.ndarray) -> MultiScaleEmbedding:
        image = as_rgb_array(image)
        key = image_key(image)
        return self.cache.get_or_compute(key, lambda: self._encode(image, key), self._encoder_lock)

    def set_image(self, image: np.ndarray) -> MultiScaleEmbedding:
        self.embedding = self.embed(image)
        return self.embedding

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """The encoder input for ``image``, exactly as the model's processor makes it."""
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def _encode(self, image: np.ndarray, key: str) -> MultiScaleEmbedding:
        pixels = self.pixel_values(image).to(self.device)
        with self._precision():
            features = self.model.get_image_embeddings(pixels)
        return MultiScaleEmbedding(key, tuple(f.float() for f in features), tuple(image.shape[:2]), self._input_hw)

    def _precision(self):
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast)

    def _scale(self, xy: np.ndarray, original_size) -> np.ndarray:
        """Image pixels -> encoder-input pixels (each axis on its own: the input is square)."""
        h, w = original_size
        ih, iw = self._input_hw
        return xy * np.array([iw / w, ih / h])

    # -- prompts -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        *,
        embedding: MultiScaleEmbedding | None = None,
    ) -> Prediction:
        """As ``SamSegmenter.predict``: points (x, y) with labels 1/0, one box x0, y0, x1, y1,
        ``mask_input`` a low-res logit map from an earlier prediction of this model."""
        emb = embedding or self.embedding
        if emb is None:
            raise RuntimeError("set an image first (set_image or embed)")
        coords, labels, box = check_prompts(point_coords, point_labels, box, emb.original_size)
        kwargs = {}
        if coords is not None:
            c = self._scale(coords, emb.original_size)
            kwargs["input_points"] = torch.as_tensor(c, dtype=torch.float, device=self.device)[None, None]
            kwargs["input_labels"] = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None, None]
        if box is not None:
            b = self._scale(box.reshape(2, 2), emb.original_size).reshape(4)
            kwargs["input_boxes"] = torch.as_tensor(b, dtype=torch.float, device=self.device)[None, None]
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            m = m.reshape((1,) * (4 - m.ndim) + m.shape)
            kwargs["input_masks"] = torch.as_tensor(m, device=self.device)
        out = self.model(image_embeddings=list(emb.features), multimask_output=multimask_output, **kwargs)
        low_res = out.pred_masks[0, 0].float()  # (C, h, w)
        masks = F.interpolate(low_res[None], emb.original_size, mode="bilinear", align_corners=False)[0]
        return Prediction(
            masks=(masks > self.mask_threshold).cpu().numpy(),
            scores=out.iou_scores[0, 0].float().cpu().numpy(),
            low_res_logits=low_res.cpu().numpy(),
        )

    @torch.inference_mode()
    def decode_points(self, points: np.ndarray, embedding: MultiScaleEmbedding):
        """Each point alone as a positive prompt, all in one decoder call (batched as SAM 2's
        ``point_batch_size``): (N, 3, h, w) low-res logits and (N, 3) predicted IoUs."""
        c = self._scale(np.asarray(points, dtype=np.float64).reshape(-1, 2), embedding.original_size)
        pts = torch.as_tensor(c, dtype=torch.float, device=self.device)[None, :, None, :]
        lbl = torch.ones(pts.shape[:3], dtype=torch.int, device=self.device)
        out = self.model(
            image_embeddings=list(embedding.features), input_points=pts, input_labels=lbl, multimask_output=True
        )
        return out.pred_masks[0].float(), out.iou_scores[0].float()
