"""From low-res mask logits to what automatic mask generation keeps: stability scores, boxes
and COCO RLE, chunk by chunk, so no dense full-resolution batch is ever kept.

The official pipeline upsamples every candidate of a batch to full resolution at once, then
computes the stability score, binarises, finds boxes, pads crops to the image and run-length
encodes in Python. Here:

- stability scores come from the low-res logits (``annotator.amg.stability``: exact, with
  full-resolution work only along mask edges), so candidates the stability filter drops are
  never upsampled;
- the survivors are upsampled a chunk at a time and *transposed* (each map laid out x-major),
  so the binary mask is already in the column-major order of COCO RLE and pycocotools encodes
  it without a copy; boxes and areas are then read off the RLEs. The upsampling is
  ``Sam.postprocess_masks``'s two bilinear resizes applied to the transposed low-res map, which
  gives the same logits (bilinear resizing is separable; only the rounding order of the two
  axes differs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from annotator.amg.stability import axis_map, stability_from_low_res


@dataclass(frozen=True)
class CropFrame:
    """Where a crop sits in the image and how the encoder saw it."""

    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the image
    image_hw: tuple[int, int]  # (H, W) of the whole image
    input_hw: tuple[int, int]  # (h, w) of the resized crop inside the encoder's square input
    encoder_size: int = 1024
    # SAM 2 / SAM 3: the low-res logits are resized straight to the crop's size (one bilinear
    # resize, as their processors do), not to the encoder input first (SAM 1's two)
    direct: bool = False

    @property
    def crop_hw(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.crop_box
        return (y1 - y0, x1 - x0)

    @property
    def is_full_image(self) -> bool:
        return tuple(self.crop_box) == (0, 0, self.image_hw[1], self.image_hw[0])


def upscale_transposed(low_t: torch.Tensor, frame: CropFrame) -> torch.Tensor:
    """Full-resolution logits of the crop, transposed: (n, 256, 256) maps laid out (x, y) ->
    (n, w, h). ``Sam.postprocess_masks`` on the transposed maps."""
    s = frame.encoder_size
    h, w = frame.crop_hw
    if frame.direct:
        return F.interpolate(low_t[:, None], (w, h), mode="bilinear", align_corners=False).squeeze(1)
    ih, iw = frame.input_hw
    factor = s // low_t.shape[-1]
    # Upsampling by an exact factor samples every output at the same place wherever the input
    # starts, so only the low-res rows/columns the crop to the input size reads are upsampled
    # (plus one, so no clamping at the cut).
    lx, ly = min(low_t.shape[-2], iw // factor + 2), min(low_t.shape[-1], ih // factor + 2)
    x = F.interpolate(low_t[:, None, :lx, :ly], scale_factor=factor, mode="bilinear", align_corners=False)
    x = x[..., :iw, :ih]
    return F.interpolate(x, (w, h), mode="bilinear", align_corners=False).squeeze(1)


def boxes_from_transposed(bits_t: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (inclusive, int64) of binary masks laid out (n, w, h); [0, 0, 0, 0] when
    empty, like ``segment_anything.utils.amg.batched_mask_to_box``."""
    n, w, h = bits_t.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=bits_t.device)
    cols = bits_t.any(dim=2)  # (n, w): columns that hold the mask
    rows = bits_t.any(dim=1)  # (n, h)

    def first_last(flags: torch.Tensor, size: int):
        idx = torch.arange(size, device=flags.device)
        last = torch.where(flags, idx, -1).amax(dim=1)
        first = torch.where(flags, idx, size).amin(dim=1)
        return first, last

    x0, x1 = first_last(cols, w)
    y0, y1 = first_last(rows, h)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where((x1 >= 0).unsqueeze(1), boxes, torch.zeros_like(boxes))


def rle_boxes(rles: list[dict]) -> np.ndarray:
    """XYXY inclusive boxes (int64) of RLEs, [0, 0, 0, 0] for empty masks."""
    if not rles:
        return np.zeros((0, 4), np.int64)
    xywh = mask_utils.toBbox(rles).astype(np.int64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1], axis=1)
    return np.where(xywh[:, 2:3] > 0, boxes, 0)


def encode_transposed(bits_t: np.ndarray, frame: CropFrame) -> list[dict]:
    """COCO RLEs (image frame) of uint8 masks laid out (n, w, h) in crop coordinates."""
    if len(bits_t) == 0:
        return []
    if not frame.is_full_image:
        x0, y0, x1, y1 = frame.crop_box
        H, W = frame.image_hw
        padded = np.zeros((len(bits_t), W, H), dtype=np.uint8)
        padded[:, x0:x1, y0:y1] = bits_t
        bits_t = padded
    # (n, W, H) C-contiguous is (H, W, n) Fortran-contiguous: what pycocotools encodes
    return mask_utils.encode(np.asfortranarray(bits_t.transpose(2, 1, 0)))


@dataclass
class MaskSet:
    """Candidate masks and their per-mask data, as compact arrays (the RLEs are compressed).

    ``boxes`` are XYXY inclusive (as the official generator's), in the frame named by the
    caller: crop coordinates before ``uncrop``, image coordinates after."""

    rles: list = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    iou_preds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    crop_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, index) -> MaskSet:
        """The masks at ``index`` (integer indices, in that order, or a boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return MaskSet(
            rles=[self.rles[i] for i in index],
            boxes=self.boxes[index],
            areas=self.areas[index],
            iou_preds=self.iou_preds[index],
            stability=self.stability[index],
            points=self.points[index],
            crop_boxes=self.crop_boxes[index],
        )

    @staticmethod
    def concat(sets: list[MaskSet]) -> MaskSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            return MaskSet()
        return MaskSet(
            rles=[r for s in sets for r in s.rles],
            boxes=np.concatenate([s.boxes for s in sets]),
            areas=np.concatenate([s.areas for s in sets]),
            iou_preds=np.concatenate([s.iou_preds for s in sets]),
            stability=np.concatenate([s.stability for s in sets]),
            points=np.concatenate([s.points for s in sets]),
            crop_boxes=np.concatenate([s.crop_boxes for s in sets]),
        )


def stability_scores(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """``calculate_stability_score`` for a chunk of full-resolution logits: the IoU of the masks
    thresholded at ``mask_threshold`` +- ``offset``; one is inside the other, so it is the ratio
    of their areas."""
    return _count(logits > mask_threshold + offset) / _count(logits > mask_threshold - offset)


def _count(bits: torch.Tensor) -> torch.Tensor:
    """True pixels per mask of (n, a, b) as int32; summing rows in int16 first is several times
    faster than one reduction (and is what the official code does)."""
    if bits.shape[-1] <= torch.iinfo(torch.int16).max:
        return bits.sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return bits.sum(dim=(-2, -1), dtype=torch.int32)


def near_crop_edge(boxes: np.ndarray, frame: CropFrame, atol: float = 20.0) -> np.ndarray:
    """Masks whose box (crop coordinates) touches a crop edge that is not an image edge, the
    official ``is_box_near_crop_edge``."""
    x0, y0, _, _ = frame.crop_box
    H, W = frame.image_hw
    b = boxes.astype(np.float32) + np.array([x0, y0, x0, y0], np.float32)
    crop = np.asarray(frame.crop_box, np.float32)
    image = np.array([0, 0, W, H], np.float32)
    near_crop = np.abs(b - crop) <= atol
    near_image = np.abs(b - image) <= atol
    return (near_crop & ~near_image).any(axis=1)


def masks_from_logits(
    low_t: torch.Tensor,
    iou_preds: torch.Tensor,
    points: np.ndarray,
    frame: CropFrame,
    *,
    mask_threshold: float,
    stability_score_offset: float,
    stability_score_thresh: float,
    chunk: int = 8,
) -> MaskSet:
    """Filter and encode candidates (already past the predicted-IoU filter): stability score on
    the full-resolution logits, stability filter, binarisation, boxes, crop-edge filter, RLE.

    ``low_t`` (n, 256, 256) transposed low-res logits; ``iou_preds`` (n,); ``points`` (n, 2)
    in crop coordinates. Boxes of the result are in crop coordinates, like the official
    per-batch data."""
    parts = []
    h, w = frame.crop_hw
    ih, iw = frame.input_hw
    n_low = low_t.shape[-1]
    factor = frame.encoder_size // n_low
    maps = (
        None
        if frame.direct
        else (axis_map(n_low, factor, iw, w, low_t.device), axis_map(n_low, factor, ih, h, low_t.device))
    )
    for start in range(0, len(low_t), chunk):
        low = low_t[start : start + chunk].float()
        # exact at low res where the logits are clear of the thresholds; at full resolution
        # when too much of the masks is close to them
        stability = (
            None
            if frame.direct
            else stability_from_low_res(
                low, maps, mask_threshold, stability_score_offset, max_work=len(low) * h * w // 4
            )
        )
        logits = None
        if stability is None:
            logits = upscale_transposed(low, frame)  # (c, w, h)
            stability = stability_scores(logits, mask_threshold, stability_score_offset)
        if stability_score_thresh > 0.0:
            idx = torch.nonzero(stability >= stability_score_thresh).flatten()
            if len(idx) == 0:
                continue
        else:
            idx = torch.arange(len(stability), device=stability.device)
        if logits is None:
            logits = upscale_transposed(low[idx] if len(idx) < len(low) else low, frame)
        elif len(idx) < len(low):
            logits = logits[idx]
        bits = logits > mask_threshold
        del logits
        idx = idx.cpu().numpy()
        if frame.is_full_image:
            # no crop edge that is not an image edge, so nothing to filter: encode, then read
            # boxes and areas off the RLEs
            rles = encode_transposed(bits.cpu().numpy().view(np.uint8), frame)
            boxes = rle_boxes(rles)
        else:
            boxes = boxes_from_transposed(bits).cpu().numpy()
            ok = ~near_crop_edge(boxes, frame)
            if not ok.any():
                continue
            if not ok.all():
                bits, boxes, idx = bits[torch.as_tensor(ok, device=bits.device)], boxes[ok], idx[ok]
            rles = encode_transposed(bits.cpu().numpy().view(np.uint8), frame)
        parts.append(
            MaskSet(
                rles=rles,
                boxes=boxes.astype(np.int64),
                areas=mask_utils.area(rles).astype(np.int64),
                iou_preds=iou_preds[idx + start].float().cpu().numpy(),
                stability=stability.cpu().numpy()[idx],
                points=points[idx + start],
                crop_boxes=np.tile(np.asarray(frame.crop_box, np.int64), (len(idx), 1)),
            )
        )
    return MaskSet.concat(parts)
