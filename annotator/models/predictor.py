"""Prompted segmentation with SAM: set an image, then predict masks from points and a box.

``SamSegmenter`` computes what ``segment_anything.SamPredictor`` computes (same transforms,
same prompt encoder, decoder and postprocessing), with four differences that matter in an
app: fused attention (same numbers, less time and memory), an optional bf16/fp16 encoder,
a content-keyed embedding cache so returning to an image never re-runs the encoder, and the
mask decoder laid out for a CPU and bound to the image (``EmbeddingDecoder``: a click
reuses the image's share of the work). Prediction can take the embedding explicitly, so
many sessions can share one model.

``runtime`` chooses what runs the image encoder: ``"torch"`` (the modules as built, any
device) or, on a CPU, ``"onnx"`` / ``"openvino"`` (a graph exported from the same modules,
``annotator.models.runtime``). ``predict_candidates`` returns the candidates as low-res logits
that are upscaled only when a mask is read, one candidate and one resolution at a time (a click
shows one candidate at display resolution; accepting it reads that one at full resolution);
``predict_many`` decodes prompts of several sessions together.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from annotator.annotations.pixels import as_rgb_array
from annotator.models.device import autocast_dtype, pick_device
from annotator.models.embeddings import EmbeddingCache, ImageEmbedding, image_key
from annotator.models.lowres import axis_map, count_above
from annotator.models.modeling.attention import fuse_attention
from annotator.models.modeling.mask_decoder import MULTIMASK, SINGLE, EmbeddingDecoder, sparse_embeddings
from annotator.models.runtime import ExportedSam, check_runtime

# images whose EmbeddingDecoder is kept: a few sessions' current images (~10 MB each)
DECODED_IMAGES = 4


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


class LazyPrediction(Prediction):
    """A ``Prediction`` whose masks are upscaled from the low-res logits when read.

    ``masks`` (all candidates, full resolution) is what ``SamSegmenter.predict`` returns, the
    same numbers. ``mask(i)`` upscales one candidate; ``mask(i, size_hw)`` upscales it straight
    to another size (the canvas's) instead of resizing the full-resolution mask. ``areas``
    are the full-resolution pixel counts, from the low-res logits (``annotator.models.lowres``:
    exact but for pixels within float rounding of the threshold).
    """

    def __init__(
        self, low_res: torch.Tensor, scores: np.ndarray, embedding: ImageEmbedding, postprocess, mask_threshold: float
    ):
        self._low = low_res  # (C, 256, 256) float32
        self.scores = scores
        self.low_res_logits = low_res.numpy()
        self._input_size = tuple(embedding.input_size)
        self._original_size = tuple(embedding.original_size)
        self._postprocess = postprocess
        self._threshold = mask_threshold
        self._masks: np.ndarray | None = None
        self._one: dict = {}
        self._areas: np.ndarray | None = None

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            with torch.no_grad():
                full = self._postprocess(self._low[None], self._input_size, self._original_size)
            self._masks = (full[0] > self._threshold).numpy()
        return self._masks

    @masks.setter
    def masks(self, value) -> None:
        self._masks = value

    def mask(self, i: int, size_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Candidate ``i`` as a bool mask of ``size_hw`` (default: the image's size)."""
        size_hw = self._original_size if size_hw is None else tuple(size_hw)
        if size_hw == self._original_size and self._masks is not None:
            return self._masks[i]
        key = (int(i), size_hw)
        if key not in self._one:
            with torch.no_grad():
                if size_hw == self._original_size:
                    logits = self._postprocess(self._low[None, i : i + 1], self._input_size, size_hw)
                else:
                    logits = _resize_logits(self._low[None, i : i + 1], self._input_size, size_hw)
            self._one[key] = (logits[0, 0] > self._threshold).numpy()
        return self._one[key]

    @property
    def areas(self) -> np.ndarray:
        """(C,) full-resolution pixel counts of the candidates."""
        if self._areas is None:
            self._areas = _areas_from_low_res(self._low, self._input_size, self._original_size, self._threshold)
            if self._areas is None:  # noise-like logits: counting at full resolution is cheaper
                self._areas = self.masks.reshape(len(self._low), -1).sum(1)
        return self._areas

    def __repr__(self) -> str:
        return f"LazyPrediction({len(self._low)} candidates, scores={self.scores})"


def _resize_logits(low: torch.Tensor, input_size, size_hw) -> torch.Tensor:
    """``Sam.postprocess_masks`` with another final size: the low-res logits upscaled to the
    encoder's frame, cropped to the image's part, resized to ``size_hw``."""
    factor = 1024 // low.shape[-1]
    x = F.interpolate(low, scale_factor=factor, mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, size_hw, mode="bilinear", align_corners=False)


def _areas_from_low_res(low: torch.Tensor, input_size, original_size, threshold: float):
    n_low = low.shape[-1]
    factor = 1024 // n_low
    (ih, iw), (h, w) = input_size, original_size
    maps = (axis_map(n_low, factor, ih, h), axis_map(n_low, factor, iw, w))
    counts = count_above(low, maps, (threshold,), max_work=len(low) * h * w // 4)
    return None if counts is None else counts[0].numpy()


@dataclass
class PromptSpec:
    """One prompt for ``SamSegmenter.predict_many``: ``predict``'s arguments."""

    embedding: ImageEmbedding
    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None
    multimask_output: bool = True


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
        runtime: str = "torch",
        runtime_cache: str | None = None,
        progress: bool = True,
    ):
        self.device = pick_device(str(device) if device is not None else None)
        self.runtime = check_runtime(runtime, self.device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.engine = None
        if self.runtime == "torch":
            if precision == "int8":
                raise ValueError("int8 runs on the exported runtimes: add --runtime onnx (or openvino)")
            self._autocast = autocast_dtype(precision)
        else:
            self._autocast = None
            # exported from the official modules, before the attention is fused
            self.engine = ExportedSam(
                self.model, self.runtime, precision=precision, cache_root=runtime_cache, progress=progress
            )
        if fused:
            fuse_attention(self.model)
        self.transform = ResizeLongestSide(self.model.image_encoder.img_size)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name = name
        self.embedding: ImageEmbedding | None = None
        self._encoder_lock = threading.Lock()
        self._decoders: OrderedDict[str, EmbeddingDecoder] = OrderedDict()
        self._decoders_lock = threading.Lock()

    # -- image ---------------------------------------------------------------------------
    @property
    def embedding_bytes(self) -> int:
        """One image's features: (C, 64, 64) float32, whatever the encoder (4 MB)."""
        h, w = self.model.prompt_encoder.image_embedding_size
        return self.model.prompt_encoder.embed_dim * h * w * 4

    def is_cached(self, image: np.ndarray) -> bool:
        return image_key(as_rgb_array(image)) in self.cache

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """The embedding of ``image`` (RGB uint8, any size), from the cache when present."""
        image = as_rgb_array(image)
        key = image_key(image)
        return self.cache.get_or_compute(key, lambda: self._encode(image, key), self._encoder_lock)

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        self.embedding = self.embed(image)
        return self.embedding

    @torch.no_grad()
    def _encode(self, image: np.ndarray, key: str) -> ImageEmbedding:
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        input_size = tuple(x.shape[-2:])
        x = self.model.preprocess(x)
        if self.engine is not None:
            features = self.engine.encode(x)
        else:
            with self._precision():
                features = self.model.image_encoder(x)
        return ImageEmbedding(key, features.float(), tuple(image.shape[:2]), input_size)

    def _precision(self):
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast)

    # -- prompts -------------------------------------------------------------------------
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
        lazy = self.predict_candidates(
            point_coords, point_labels, box, mask_input, multimask_output, embedding=embedding
        )
        return Prediction(masks=lazy.masks, scores=lazy.scores, low_res_logits=lazy.low_res_logits)

    def predict_candidates(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        *,
        embedding: ImageEmbedding | None = None,
    ) -> LazyPrediction:
        """``predict``, with the masks upscaled only when read (see ``LazyPrediction``)."""
        emb = embedding or self.embedding
        if emb is None:
            raise RuntimeError("set an image first (set_image or embed)")
        spec = PromptSpec(emb, point_coords, point_labels, box, mask_input, multimask_output)
        return self.predict_many([spec])[0]

    def _lazy(self, low_res: torch.Tensor, iou: torch.Tensor, emb: ImageEmbedding) -> LazyPrediction:
        return LazyPrediction(
            low_res.float().cpu(),
            iou.float().cpu().numpy(),
            emb,
            self.model.postprocess_masks,
            self.model.mask_threshold,
        )

    # -- batches of prompts --------------------------------------------------------------
    def decoder_inputs(self, spec: PromptSpec):
        """One prompt as the decoder's inputs: coords (N, 2) in the encoder frame, labels (N,),
        the mask fed back (1, 256, 256) or None; the points padded with one "not a point" when
        there is no box, as ``PromptEncoder`` does."""
        emb = spec.embedding
        coords, labels, box = check_prompts(spec.point_coords, spec.point_labels, spec.box, emb.original_size)
        parts_c, parts_l = [], []
        if coords is not None:
            parts_c.append(self.transform.apply_coords(coords, emb.original_size))
            parts_l.append(labels.astype(np.float32))
        if box is None:
            parts_c.append(np.zeros((1, 2)))
            parts_l.append(np.array([-1.0]))
        else:
            parts_c.append(self.transform.apply_boxes(box, emb.original_size).reshape(2, 2))
            parts_l.append(np.array([2.0, 3.0]))
        mask = None if spec.mask_input is None else _mask_input(spec.mask_input)
        return np.concatenate(parts_c).astype(np.float32), np.concatenate(parts_l).astype(np.float32), mask

    @torch.no_grad()
    def predict_many(self, specs: list[PromptSpec]) -> list[LazyPrediction]:
        """``predict_candidates`` for several prompts, on one or several images (clicks of
        several sessions). Prompts on the same image with the same number of points, alike in
        having a mask fed back and in wanting candidates, are one ``EmbeddingDecoder`` call.
        Raises ``ValueError`` for a bad prompt before anything runs."""
        inputs = [self.decoder_inputs(s) for s in specs]
        groups: dict[tuple, list[int]] = {}
        for i, (c, _, mask) in enumerate(inputs):
            key = (specs[i].embedding.key, len(c), mask is not None, specs[i].multimask_output)
            groups.setdefault(key, []).append(i)
        out: list[LazyPrediction | None] = [None] * len(specs)
        for (_, _, has_mask, multimask), idx in groups.items():
            low_res, iou = self._decode_on_image(specs[idx[0]].embedding, [inputs[i] for i in idx], has_mask, multimask)
            for row, i in enumerate(idx):
                out[i] = self._lazy(low_res[row], iou[row], specs[i].embedding)
        return out

    def _decode_on_image(self, emb: ImageEmbedding, inputs: list, has_mask: bool, multimask: bool):
        """Prompts on one image (``decoder_inputs`` each, with the same number of points)
        through that image's ``EmbeddingDecoder``: (low-res logits, IoU) of the candidates."""

        def t(a):
            return torch.as_tensor(np.stack(a), dtype=torch.float32, device=self.device)

        sparse = sparse_embeddings(self.model.prompt_encoder, t([x[0] for x in inputs]), t([x[1] for x in inputs]))
        dense = None
        if has_mask:
            dense = self.model.prompt_encoder.mask_downscaling(t([x[2] for x in inputs]))
        return self._embedding_decoder(emb).decode(sparse, dense, MULTIMASK if multimask else SINGLE)

    @torch.no_grad()
    def prepare(self, embedding: ImageEmbedding) -> None:
        """The decoder's per-image work (its first block's image side, ~0.8 GFLOP), done now
        so that the first click on the image does not wait for it."""
        self._embedding_decoder(embedding).shared()

    def _embedding_decoder(self, emb: ImageEmbedding) -> EmbeddingDecoder:
        """The image's decoder, kept for the last few images (each holds ~10 MB of its
        first block's image side once a prompt without a mask has run)."""
        with self._decoders_lock:
            decoder = self._decoders.get(emb.key)
            if decoder is None or decoder.features is not emb.features:
                decoder = EmbeddingDecoder(self.model, emb.features)
                self._decoders[emb.key] = decoder
            self._decoders.move_to_end(emb.key)
            while len(self._decoders) > DECODED_IMAGES:
                self._decoders.popitem(last=False)
            return decoder


def _mask_input(mask_input) -> np.ndarray:
    """A previous prediction's low-res logits as (1, 256, 256) float32."""
    m = np.asarray(mask_input, dtype=np.float32)
    return m.reshape(m.shape[-3:] if m.ndim >= 3 else (1,) + m.shape)
