"""Prompted segmentation with SAM: set an image, then predict masks from points and a box.

``SamSegmenter`` computes what ``segment_anything.SamPredictor`` computes (same transforms,
same prompt encoder, decoder and postprocessing), with three differences that matter in an
app: fused attention (same numbers, less time and memory), an optional bf16/fp16 encoder,
and a content-keyed embedding cache so returning to an image never re-runs the encoder.
Prediction can take the embedding explicitly, so many sessions can share one model.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from annotator.models.modeling.attention import fuse_attention
from annotator.models.device import autocast_dtype, pick_device
from annotator.models.embeddings import EmbeddingCache, ImageEmbedding, image_key
from annotator.annotations.pixels import as_rgb_array


@dataclass
class Prediction:
    """Candidate masks for one prompt, best first as the model orders them."""

    masks: np.ndarray  # (C, H, W) bool, in original image pixels
    scores: np.ndarray  # (C,) predicted IoU; NaN where the backend has no score
    low_res_logits: np.ndarray | None  # (C, 256, 256), feed one back as mask_input to refine

    def best(self) -> int:
        return int(np.nanargmax(self.scores)) if np.isfinite(self.scores).any() else 0


def check_prompts(point_coords, point_labels, box, size_hw):
    """Validate prompts; returns (coords (N,2) float, labels (N,) int, box (4,) float) or Nones.

    Points may lie anywhere (SAM accepts points outside the image); a box must have area.
    """
    coords = labels = None
    if point_coords is not None and len(point_coords):
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = object, 0 = background)")
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(coords):
            raise ValueError(f"{len(coords)} points but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("point labels must be 1 (object) or 0 (background)")
        if not np.isfinite(coords).all():
            raise ValueError("point coordinates must be finite numbers")
    if box is not None:
        box = np.asarray(box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError("a box is four finite numbers x0, y0, x1, y1")
        x0, x1 = sorted(box[[0, 2]])
        y0, y1 = sorted(box[[1, 3]])
        h, w = size_hw
        x0, x1 = np.clip([x0, x1], 0, w)
        y0, y1 = np.clip([y0, y1], 0, h)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError("the box has no area inside the image")
        box = np.array([x0, y0, x1, y1])
    if coords is None and box is None:
        raise ValueError("give at least one point or a box")
    return coords, labels, box


class SamSegmenter:
    """SAM prompted segmentation over a built model."""

    backend = "sam"

    def __init__(
        self,
        model: Sam,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        fused: bool = True,
        cache: EmbeddingCache | None = None,
        name: str = "sam",
    ):
        self.device = pick_device(str(device) if device is not None else None)
        self.precision = precision
        self._autocast = autocast_dtype(precision)
        self.model = model.to(self.device).eval()
        if fused:
            fuse_attention(self.model)
        self.transform = ResizeLongestSide(self.model.image_encoder.img_size)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name = name
        self.embedding: ImageEmbedding | None = None
        self._encoder_lock = threading.Lock()
        with torch.no_grad():  # depends only on the weights; the official code recomputes it per click
            self._dense_pe = self.model.prompt_encoder.get_dense_pe()

    # -- image ---------------------------------------------------------------------------
    def is_cached(self, image: np.ndarray) -> bool:
        return image_key(as_rgb_array(image)) in self.cache

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """The embedding of ``image`` (RGB uint8, any size), from the cache when present."""
        image = as_rgb_array(image)
        key = image_key(image)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self._encoder_lock:  # two sessions uploading one image encode it once
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            embedding = self._encode(image, key)
            self.cache.put(embedding)
            return embedding

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        self.embedding = self.embed(image)
        return self.embedding

    @torch.no_grad()
    def _encode(self, image: np.ndarray, key: str) -> ImageEmbedding:
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        input_size = tuple(x.shape[-2:])
        x = self.model.preprocess(x)
        with self._precision():
            features = self.model.image_encoder(x)
        return ImageEmbedding(key, features.float(), tuple(image.shape[:2]), input_size)

    def _precision(self):
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast)

    # -- prompts -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        *,
        embedding: ImageEmbedding | None = None,
    ) -> Prediction:
        """Masks for any mix of positive (1) / negative (0) points in (x, y) image pixels and
        one box (x0, y0, x1, y1). ``mask_input`` is a (1, 256, 256) low-res logit map from a
        previous prediction, to refine it."""
        emb = embedding or self.embedding
        if emb is None:
            raise RuntimeError("set an image first (set_image or embed)")
        coords, labels, box = check_prompts(point_coords, point_labels, box, emb.original_size)
        points = boxes = masks_in = None
        if coords is not None:
            c = self.transform.apply_coords(coords, emb.original_size)
            points = (
                torch.as_tensor(c, dtype=torch.float, device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int, device=self.device)[None],
            )
        if box is not None:
            b = self.transform.apply_boxes(box, emb.original_size)
            boxes = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            m = m.reshape((1,) * (4 - m.ndim) + m.shape)
            masks_in = torch.as_tensor(m, device=self.device)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks_in)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=emb.features,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        masks = self.model.postprocess_masks(low_res, emb.input_size, emb.original_size)
        return Prediction(
            masks=(masks[0] > self.model.mask_threshold).cpu().numpy(),
            scores=iou[0].float().cpu().numpy(),
            low_res_logits=low_res[0].float().cpu().numpy(),
        )
