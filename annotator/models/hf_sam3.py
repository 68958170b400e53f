"""SAM 3's promptable concept segmentation through ``transformers``: every instance of a noun
phrase and/or of exemplar boxes, as a ``ConceptFinder``.

``Sam3ConceptFinder.find_all`` computes what ``Sam3Model`` plus
``Sam3Processor.post_process_instance_segmentation`` compute for the same image, text and boxes,
split so that repeated work is done once:

- the image encoder's output is kept in a content-keyed ``EmbeddingCache`` (a second search on
  the same image, or the same image in another session, skips the encoder);
- a text's embedding is computed once per finder (``text_features``) and reused for every image
  of a run and every later search for the same words.

Exemplar boxes are in image pixels, labelled 1 (more like this) or 0 (not like this); with
boxes and no text, SAM 3 searches for the "visual" concept the boxes show.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from annotator.annotations.pixels import as_rgb_array
from annotator.models.device import pick_device
from annotator.models.embeddings import EmbeddingCache, image_key
from annotator.models.protocol import Instance

TEXT_CACHE_SIZE = 64  # texts whose embeddings a finder keeps
MAX_TEXT_CHARS = 200  # the tokenizer keeps 32 tokens; a longer "concept" is a sentence, not a noun phrase


@dataclass(frozen=True)
class VisionEmbedding:
    """SAM 3's image-encoder output for one image (its FPN levels and their position codes)."""

    key: str
    output: object  # transformers' Sam3VisionEncoderOutput
    original_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        tensors = list(self.output.fpn_hidden_states) + list(self.output.fpn_position_encoding)
        return sum(t.numel() * t.element_size() for t in tensors)


def load_sam3(path: str | Path):
    """``(Sam3Model, Sam3Processor)`` from a Hugging Face folder; a folder whose weights do not
    fit the model (missing or mismatched tensors) is an error, never a half-random model."""
    from transformers import Sam3Model, Sam3Processor

    from annotator.models.checkpoints import CheckpointError
    from annotator.models.hub import check_model_type

    check_model_type(Path(path), "sam3", "SAM 3")
    try:
        model, info = Sam3Model.from_pretrained(str(path), output_loading_info=True)
        processor = Sam3Processor.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is not a SAM 3 checkpoint folder: {e}") from None
    missing = sorted(info.get("missing_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    if missing or mismatched:
        what = (
            f"{len(missing)} tensors missing (e.g. {missing[0]})"
            if missing
            else f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})"
        )
        raise CheckpointError(f"{path} is not a SAM 3 checkpoint: {what}")
    return model.eval(), processor


class Sam3ConceptFinder:
    """Every instance of a concept in an image; see the module doc."""

    def __init__(self, model, processor, *, device=None, cache: EmbeddingCache | None = None, name: str = "sam3"):
        self.device = pick_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name = name
        self.text_encoder_calls = 0  # how often a text was encoded (the rest came from the cache)
        self._texts: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    # -- inputs ------------------------------------------------------------------------------
    def embed(self, image: np.ndarray) -> VisionEmbedding:
        image = as_rgb_array(image)
        key = image_key(image)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                output = self.model.get_vision_features(pixel_values=pixels.to(self.device))
            embedding = VisionEmbedding(key, output, tuple(image.shape[:2]))
            self.cache.put(embedding)
            return embedding

    def is_cached(self, image: np.ndarray) -> bool:
        return image_key(as_rgb_array(image)) in self.cache

    def text_features(self, text: str) -> tuple:
        """``(text model output, attention mask)`` for ``text``, encoded once per finder."""
        with self._lock:
            hit = self._texts.get(text)
            if hit is not None:
                self._texts.move_to_end(text)
                return hit
        tokens = self.processor(text=text, return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        with torch.inference_mode():
            features = self.model.get_text_features(input_ids=ids, attention_mask=mask, return_dict=True)
        with self._lock:
            self.text_encoder_calls += 1
            self._texts[text] = (features, mask)
            while len(self._texts) > TEXT_CACHE_SIZE:
                self._texts.popitem(last=False)
        return features, mask

    # -- search ------------------------------------------------------------------------------
    def find_all(
        self,
        image: np.ndarray | VisionEmbedding,
        text: str | None = None,
        boxes=None,
        box_labels=None,
        threshold: float = 0.5,
    ) -> list[Instance]:
        """Instances scoring at least ``threshold``, best first. ``image``: the pixels or an
        embedding from ``embed``. At least a text or one box is needed."""
        emb = image if isinstance(image, VisionEmbedding) else self.embed(image)
        text, boxes, box_labels = check_concept(text, boxes, box_labels, emb.original_size)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError("the score threshold is between 0 and 1")
        h, w = emb.original_size
        kwargs = {}
        if boxes is not None:
            prompt = self.processor(
                input_boxes=[boxes.tolist()],
                input_boxes_labels=[box_labels.tolist()],
                original_sizes=[[h, w]],
                return_tensors="pt",
            )
            kwargs["input_boxes"] = prompt["input_boxes"].to(self.device)
            kwargs["input_boxes_labels"] = prompt["input_boxes_labels"].to(self.device)
        features, mask = self.text_features(text if text is not None else "visual")
        with torch.inference_mode():
            out = self.model(vision_embeds=emb.output, text_embeds=features, attention_mask=mask, **kwargs)
            found = self.processor.post_process_instance_segmentation(
                out, threshold=float(threshold), target_sizes=[(h, w)]
            )[0]
        scores = found["scores"].float().cpu().numpy()
        masks = found["masks"].cpu().numpy().astype(bool)
        xyxy = found["boxes"].float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        return [Instance(masks[i], float(scores[i]), tuple(float(v) for v in xyxy[i])) for i in order]


def check_concept(text, boxes, box_labels, size_hw):
    """Validate a concept prompt: ``(text or None, boxes (N, 4) float or None, labels (N,) int or
    None)``; raises ValueError with a message for the user."""
    if text is not None:
        text = " ".join(str(text).split())
        if not text:
            text = None
        elif len(text) > MAX_TEXT_CHARS:
            raise ValueError(
                f"the text is {len(text)} characters; describe the object in a few words (at most {MAX_TEXT_CHARS})"
            )
    if boxes is not None and len(boxes):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError("a box is four finite numbers x0, y0, x1, y1")
        h, w = size_hw
        x0 = np.clip(np.minimum(boxes[:, 0], boxes[:, 2]), 0, w)
        x1 = np.clip(np.maximum(boxes[:, 0], boxes[:, 2]), 0, w)
        y0 = np.clip(np.minimum(boxes[:, 1], boxes[:, 3]), 0, h)
        y1 = np.clip(np.maximum(boxes[:, 1], boxes[:, 3]), 0, h)
        if ((x1 - x0) < 1).any() or ((y1 - y0) < 1).any():
            raise ValueError("an exemplar box has no area inside the image")
        boxes = np.stack([x0, y0, x1, y1], axis=1)
        labels = (
            np.ones(len(boxes), np.int64) if box_labels is None else np.asarray(box_labels, dtype=np.int64).reshape(-1)
        )
        if len(labels) != len(boxes):
            raise ValueError(f"{len(boxes)} exemplar boxes but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("exemplar box labels are 1 (like this) or 0 (not like this)")
        box_labels = labels
    else:
        boxes = box_labels = None
    if text is None and boxes is None:
        raise ValueError("give a text (e.g. 'car') or at least one exemplar box")
    if text is None and not (box_labels == 1).any():
        raise ValueError("without a text, at least one exemplar box must be positive")
    return text, boxes, box_labels
