"""A classical fallback with the prompted segmenter's interface: OpenCV GrabCut.

Used only when no SAM weights can be had; the app says so in its status line and log.
GrabCut is seeded by the box (outside = background) and by the points (small discs of sure
foreground / background). It runs on a copy scaled so the longest side is at most
``work_size`` pixels, which keeps a click under a second on a CPU.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotator.annotations.pixels import as_rgb_array
from annotator.models.embeddings import ImageEmbedding, image_key
from annotator.models.predictor import Prediction, check_prompts


class GrabCutSegmenter:
    backend = "classical"
    name = "GrabCut (OpenCV)"
    precision = "n/a"
    device = "cpu"

    def __init__(self, work_size: int = 512, iterations: int = 5):
        self.work_size = work_size
        self.iterations = iterations
        self.embedding: ImageEmbedding | None = None
        self._images: dict[str, np.ndarray] = {}

    @property
    def embedding_bytes(self) -> int:
        """The downscaled copy GrabCut works on, at most."""
        return self.work_size * self.work_size * 3

    def is_cached(self, image: np.ndarray) -> bool:
        return image_key(as_rgb_array(image)) in self._images

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """The 'embedding' here is just the downscaled image GrabCut works on."""
        image = as_rgb_array(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.work_size / max(h, w))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        )
        key = image_key(image)
        self._images = {key: small}  # keep only the latest image: no model cache to protect
        return ImageEmbedding(key, None, (h, w), small.shape[:2])

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        self.embedding = self.embed(image)
        return self.embedding

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        *,
        embedding: ImageEmbedding | None = None,
    ) -> Prediction:
        emb = embedding or self.embedding
        if emb is None or emb.key not in self._images:
            raise RuntimeError("set an image first (set_image or embed)")
        coords, labels, box = check_prompts(point_coords, point_labels, box, emb.original_size)
        small = self._images[emb.key]
        (H, W), (h, w) = emb.original_size, small.shape[:2]
        sx, sy = w / W, h / H

        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if box is not None:
            x0, y0, x1, y1 = box * [sx, sy, sx, sy]
        else:
            # No box: look around the positive points, a quarter of the image each way.
            pos = coords[labels == 1] if coords is not None else np.empty((0, 2))
            if not len(pos):
                raise ValueError("with no box, give at least one positive point")
            pad = 0.25 * np.array([W, H])
            (x0, y0), (x1, y1) = (pos.min(0) - pad) * [sx, sy], (pos.max(0) + pad) * [sx, sy]
        x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        mask[:] = cv2.GC_BGD
        mask[y0:y1, x0:x1] = cv2.GC_PR_FGD if box is not None else cv2.GC_PR_BGD
        if coords is not None:
            radius = max(2, round(0.01 * max(h, w)))
            for (x, y), label in zip(coords * [sx, sy], labels):
                cv2.circle(mask, (int(x), int(y)), radius, cv2.GC_FGD if label else cv2.GC_BGD, -1)

        if not (mask == cv2.GC_BGD).any():  # a box over the whole image: the border is background
            mask[[0, -1], :] = cv2.GC_BGD
            mask[:, [0, -1]] = cv2.GC_BGD
        if not np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).any() or min(h, w) < 2:
            result = np.zeros((h, w), bool)
        else:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(small, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            result = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
        full = cv2.resize(result.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        if box is not None:  # never leak outside the box the user drew
            bx0, by0, bx1, by1 = box.astype(int)
            outside = np.ones_like(full)
            outside[by0:by1, bx0:bx1] = False
            full[outside] = False
        return Prediction(masks=full[None], scores=np.array([np.nan], np.float32), low_res_logits=None)
