"""What the app, the prompt, the generator and the batch tools need of a model.

Every family (SAM 1 / MobileSAM through ``annotator.segmenter.SamSegmenter``, SAM 2.1 and SAM 3
clicks through ``annotator.models.hf_sam2.HFSamPredictor``) is a ``Predictor``: set an image once
(the encoder's features go to a content-keyed cache bounded by bytes), then predict from points,
a box and a previous low-res mask, as often as the user clicks. ``PointBatchPredictor`` adds
the batched single-point decoding that "segment everything" runs on a point grid.
``ConceptFinder`` (SAM 3) finds every instance of a text and/or exemplar boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedding(Protocol):
    """The cached encoder output of one image (``annotator.embeddings.EmbeddingCache`` holds
    anything with a ``key`` and ``nbytes``)."""

    key: str
    original_size: tuple[int, int]  # (H, W) of the image

    @property
    def nbytes(self) -> int: ...


@runtime_checkable
class Predictor(Protocol):
    """Prompted segmentation: 3 candidates (or 1) with scores and low-res logits per prompt."""

    name: str  # the model's name as --model takes it
    cache: object  # annotator.embeddings.EmbeddingCache

    @property
    def embedding_bytes(self) -> int:
        """Bytes of one image's cached encoder output (what an open image costs a session
        besides its pixels): 4 MB for SAM 1, about 16 MB for SAM 2.1, more for SAM 3."""

    def is_cached(self, image: np.ndarray) -> bool: ...

    def embed(self, image: np.ndarray) -> Embedding: ...

    def set_image(self, image: np.ndarray) -> Embedding: ...

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        *,
        embedding=None,
    ):
        """-> ``annotator.segmenter.Prediction``: masks in image pixels, scores, low-res logits
        (feed one back as ``mask_input`` to refine)."""


@runtime_checkable
class PointBatchPredictor(Predictor, Protocol):
    """What ``annotator.amg.MaskGenerator`` needs of a model other than SAM 1's."""

    mask_threshold: float
    upscale_directly: bool  # low-res logits go straight to image size (SAM 2), not via the input size

    def decode_points(self, points: np.ndarray, embedding) -> tuple:
        """Single positive points (N, 2) in the embedded image's pixels -> (low-res logits
        (N, 3, h, w) torch float, predicted IoU (N, 3) torch float), multimask output."""

    def input_hw(self, embedding) -> tuple[int, int]:
        """(h, w) of the image inside the encoder's input, for mapping logits back."""

    @property
    def encoder_size(self) -> int: ...


@dataclass(frozen=True)
class Instance:
    """One instance of a concept: its mask in image pixels, score and box."""

    mask: np.ndarray  # (H, W) bool
    score: float  # the detector's confidence (presence x class score), 0..1
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels


@runtime_checkable
class ConceptFinder(Protocol):
    """Promptable concept segmentation (SAM 3): every instance of a noun phrase, of exemplar
    boxes (positive or negative), or of both."""

    def find_all(
        self, image: np.ndarray, text: str | None = None, boxes=None, box_labels=None, threshold: float = 0.5
    ) -> list[Instance]: ...
