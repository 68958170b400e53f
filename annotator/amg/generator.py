"""Automatic mask generation ("segment everything"): the official generator's masks, faster.

``MaskGenerator`` takes the same keyword arguments, with the same defaults, as
``segment_anything.SamAutomaticMaskGenerator`` and returns the same records from
``generate(image)``. Differences are in how, not what:

- the image encoder runs through ``SamSegmenter.embed`` (fused attention, content-keyed
  embedding cache, the segmenter's runtime), so the app, the CLI and this generator share one
  engine and one cache; the decoder is PyTorch's ``EmbeddingDecoder`` whatever the runtime
  (``annotator.models.modeling.mask_decoder``, as for clicks): it shares the per-image work
  across points, and here skips the upscaling head for points whose masks all fail
  ``pred_iou_thresh``;
- stability scores are computed exactly from the low-res logits, and only candidates that pass
  the predicted-IoU and stability filters are upsampled, a chunk at a time; binary masks,
  boxes and RLE come from that one upsampling (``annotator.amg.postprocess``); masks are kept as
  compressed RLE, never as dense full-resolution batches;
- ``points_per_batch`` sets how often progress is reported, cancellation is checked and (in
  ``iter_generate``) masks are streamed; the decoder runs in sub-batches of
  ``decoder_batch_size`` points, each a model call of its own (the model lock is taken per
  sub-batch, so a click waits for one sub-batch, not a whole batch). Masks do not depend on
  either (each point is decoded independently).

Progress and cancellation: ``generate(image, progress=callback, cancel=event)`` calls
``callback(Progress)`` after each batch and checks ``event.is_set()`` before each crop and each
batch; when set it raises ``Cancelled``, whose ``records`` hold the deduplicated masks of the
batches that finished. ``iter_generate`` yields ``Update``s: one per batch with the batch's
*provisional* masks, then one ``final`` update with exactly what ``generate`` returns.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    build_all_layer_point_grids,
    generate_crop_boxes,
    remove_small_regions,
)
from torchvision.ops.boxes import batched_nms

from annotator.amg.params import DEFAULTS
from annotator.amg.postprocess import CropFrame, MaskSet, masks_from_logits
from annotator.annotations.pixels import as_rgb_array
from annotator.models.device import autocast_dtype
from annotator.models.modeling.mask_decoder import EmbeddingDecoder
from annotator.models.predictor import SamSegmenter

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class CancelSignal(Protocol):
    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """Generation was cancelled. ``records`` are the masks of the batches that finished,
    deduplicated across them, in the generator's output mode."""

    def __init__(self, records: list[dict], done: int, total: int, counts: FilterCounts | None = None):
        self.records = records
        self.done = done
        self.total = total
        self.counts = counts
        super().__init__(
            f"mask generation cancelled after {done} of {total} batches; "
            f"the {len(records)} masks found so far are in .records"
        )


@dataclass(frozen=True)
class Progress:
    done: int  # point batches finished
    total: int  # point batches in the whole run (all crops)
    elapsed_s: float
    eta_s: float | None  # estimated seconds left; None until a batch has finished
    crop: int  # index of the crop being processed (0 = the whole image)
    crops: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class FilterCounts:
    """What became of a run's candidate masks (three per point and crop): how many each
    filter removed, so that a run that keeps nothing can say which threshold did it."""

    candidates: int = 0
    below_iou: int = 0  # predicted IoU not above pred_iou_thresh
    below_stability: int = 0  # stability score below stability_score_thresh, or at a crop edge
    duplicates: int = 0  # removed by box NMS (within and across crops) and small-region clean-up

    @property
    def kept(self) -> int:
        return self.candidates - self.below_iou - self.below_stability - self.duplicates


@dataclass
class Update:
    """One step of ``iter_generate``.

    ``final=False``: ``records`` are the masks of one batch that passed the per-mask filters
    (predicted IoU, stability, crop edge). They are provisional: duplicate removal (box NMS
    within a crop and across crops, small-region clean-up) needs every batch, so some of them
    will not be in the result. ``final=True`` (the last update): ``records`` is the complete,
    deduplicated result, the same list ``generate`` returns; show it in place of the
    provisional masks.
    """

    records: list[dict]
    final: bool
    progress: Progress
    counts: FilterCounts | None = None  # the final update's: what each filter removed


def _model_device(model: Sam) -> torch.device:
    return next(model.parameters()).device


class MaskGenerator:
    def __init__(  # noqa: PLR0913  (SamAutomaticMaskGenerator's arguments, kept by name)
        self,
        model: Sam | SamSegmenter,
        points_per_side: int | None = DEFAULTS["points_per_side"],
        points_per_batch: int = DEFAULTS["points_per_batch"],
        pred_iou_thresh: float = DEFAULTS["pred_iou_thresh"],
        stability_score_thresh: float = DEFAULTS["stability_score_thresh"],
        stability_score_offset: float = DEFAULTS["stability_score_offset"],
        box_nms_thresh: float = DEFAULTS["box_nms_thresh"],
        crop_n_layers: int = DEFAULTS["crop_n_layers"],
        crop_nms_thresh: float = DEFAULTS["crop_nms_thresh"],
        crop_overlap_ratio: float = DEFAULTS["crop_overlap_ratio"],
        crop_n_points_downscale_factor: int = DEFAULTS["crop_n_points_downscale_factor"],
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = DEFAULTS["min_mask_region_area"],
        output_mode: str = "binary_mask",
        *,
        decoder_batch_size: int | None = None,
        precision: str | None = None,
        model_lock: contextlib.AbstractContextManager | None = None,
    ) -> None:
        """Arguments as ``SamAutomaticMaskGenerator``'s. ``model`` is a ``Sam`` (wrapped in a
        ``SamSegmenter`` on its own device; note this switches its attention modules to the fused
        ones in place, which compute the same numbers) or a ``SamSegmenter``.

        ``decoder_batch_size``: points per decoder call (default: 4 on CPU, where larger
        batches gain nothing (a 8x8 grid took the same time with 4, 8 or 16 a call) and keep
        other users' clicks waiting longer, ``points_per_batch`` on GPUs, where a larger
        ``points_per_batch`` such as 256 is faster). ``precision``: "fp32", or "bf16" / "fp16"
        autocast for the decoder (for GPUs; masks then differ slightly from fp32 ones); default:
        the segmenter's precision. A ``Sam`` gets a segmenter with this precision (default fp32).
        ``model_lock``: held around each model call (image encoder, prompt encoder, decoder)
        and released for the post-processing, so others sharing the model (an app's other
        users) get in between.
        """
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side or point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be at least 1")
        if crop_n_layers < 0:
            raise ValueError("crop_n_layers must be 0 or more")
        if points_per_side is not None:
            if points_per_side < 1:
                raise ValueError("points_per_side must be at least 1")
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(
                    f"point_grids has {len(self.point_grids)} grids but crop_n_layers={crop_n_layers} "
                    f"needs {crop_n_layers + 1} (one per layer)"
                )
        if isinstance(model, SamSegmenter):
            self.segmenter = model
        elif isinstance(model, Sam):
            self.segmenter = SamSegmenter(model, device=_model_device(model), precision=precision or "fp32")
        elif hasattr(model, "decode_points"):  # annotator.models.protocol.PointBatchPredictor (SAM 2.1, SAM 3)
            self.segmenter = model
        else:
            raise TypeError(
                f"model must be a segment_anything Sam or a SamSegmenter (or a SAM 2.1 / SAM 3 "
                f"predictor with decode_points), not {type(model).__name__}"
            )
        # SAM 1's own decoder path (EmbeddingDecoder) vs. the predictor's batched decoding
        self._sam1 = isinstance(self.segmenter, SamSegmenter)
        self.model = self.segmenter.model
        self.device = self.segmenter.device
        self.precision = precision or self.segmenter.precision
        self._autocast = autocast_dtype(self.precision)
        if decoder_batch_size is None:
            decoder_batch_size = 4 if self.device.type == "cpu" else points_per_batch
        self.decoder_batch_size = max(1, int(decoder_batch_size))
        # candidates upsampled to full resolution at a time (memory: chunk x H x W float32)
        self.mask_chunk = 32 if self.device.type == "cpu" else 64
        self._counts = FilterCounts()  # of the current (or last) run
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.model_lock = model_lock if model_lock is not None else contextlib.nullcontext()

    # -- public ------------------------------------------------------------------------------
    def generate(
        self,
        image: np.ndarray,
        progress: Callable[[Progress], Any] | None = None,
        cancel: CancelSignal | None = None,
    ) -> list[dict]:
        """Masks for ``image`` (HWC uint8 RGB), as records with the official keys
        (segmentation, area, bbox, predicted_iou, point_coords, stability_score, crop_box)."""
        for step in self._run(image, cancel, provisional=False):
            if progress is not None:
                progress(step.progress)
            if step.final:
                return step.records
        raise AssertionError("unreachable: the run ends with a final update")

    def iter_generate(self, image: np.ndarray, cancel: CancelSignal | None = None) -> Iterator[Update]:
        """Like ``generate``, as a stream: an ``Update`` with provisional masks after each batch,
        then a final one with the result (see ``Update``). Stopping the iteration early stops
        the work; a set ``cancel`` raises ``Cancelled`` from the iterator."""
        yield from self._run(image, cancel, provisional=True)

    # -- the run -----------------------------------------------------------------------------
    def _run(self, image, cancel, provisional: bool) -> Iterator[Update]:
        image = as_rgb_array(image)
        orig_hw = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        n_batches = [math.ceil(len(self.point_grids[layer]) / self.points_per_batch) for layer in layer_idxs]
        clock = _Clock(total=sum(n_batches), crops=len(crop_boxes))
        self._counts = FilterCounts()  # per run; one generator runs one image at a time
        per_crop: list[MaskSet] = []
        for ci, (crop_box, layer) in enumerate(zip(crop_boxes, layer_idxs)):
            self._check(cancel, per_crop, [], clock)
            clock.start_crop(ci)
            x0, y0, x1, y1 = crop_box
            with self.model_lock:
                emb = self.segmenter.embed(image[y0:y1, x0:x1, :])
            clock.encoded()
            if self._sam1:
                frame = CropFrame(tuple(crop_box), orig_hw, tuple(emb.input_size), self.model.image_encoder.img_size)
                with self.model_lock, torch.inference_mode(), self._precision():
                    decoder = EmbeddingDecoder(self.model, emb.features)
            else:
                frame = CropFrame(
                    tuple(crop_box),
                    orig_hw,
                    tuple(self.segmenter.input_hw(emb)),
                    self.segmenter.encoder_size,
                    direct=self.segmenter.upscale_directly,
                )
                decoder = emb  # the predictor decodes from the embedding itself
            crop_hw = np.array(frame.crop_hw)
            points = self.point_grids[layer] * crop_hw[None, ::-1]
            batches: list[MaskSet] = []
            for start in range(0, len(points), self.points_per_batch):
                self._check(cancel, per_crop, [(batches, frame)], clock)
                batch = self._process_batch(decoder, points[start : start + self.points_per_batch], frame)
                batches.append(batch)
                clock.batch_done()
                records = self._records(self._uncrop(batch, frame)) if provisional else []
                yield Update(records, False, clock.progress())
            per_crop.append(self._finish_crop(batches, frame))
            del decoder
        result = self._finish(per_crop, len(crop_boxes))
        yield Update(self._records(result), True, clock.progress(), self._final_counts(len(result)))

    def _final_counts(self, kept: int) -> FilterCounts:
        c = self._counts
        c.duplicates = c.candidates - c.below_iou - c.below_stability - kept
        return c

    def _check(self, cancel, per_crop, open_crop, clock) -> None:
        if cancel is None or not cancel.is_set():
            return
        done = list(per_crop) + [self._finish_crop(b, f) for b, f in open_crop]
        result = self._finish(done, len(done))
        raise Cancelled(self._records(result), clock.done, clock.total, self._final_counts(len(result)))

    def _precision(self):
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast)

    @torch.inference_mode()
    def _process_batch(self, decoder, points: np.ndarray, frame: CropFrame) -> MaskSet:
        if self._sam1:
            transformed = self.segmenter.transform.apply_coords(points, frame.crop_hw)
            in_points = torch.as_tensor(transformed, device=self.device)[:, None, :]
            in_labels = torch.ones((len(points), 1), dtype=torch.int, device=self.device)
            lows, ious, point_idx = self._decode(decoder, in_points, in_labels, len(points))
        else:
            lows, ious, point_idx = self._decode_with_predictor(decoder, points)
        if not lows:
            return MaskSet()
        point_idx = np.concatenate(point_idx)
        passed = masks_from_logits(
            torch.cat(lows),
            torch.cat(ious),
            points[point_idx],
            frame,
            mask_threshold=self.segmenter.mask_threshold if not self._sam1 else self.model.mask_threshold,
            stability_score_offset=self.stability_score_offset,
            stability_score_thresh=self.stability_score_thresh,
            chunk=self.mask_chunk,
        )
        self._counts.below_stability += int(sum(len(x) for x in lows)) - len(passed)
        return passed

    def _decode(self, decoder: EmbeddingDecoder, in_points, in_labels, n: int):
        """The model's part of a batch: low-res logits and predicted IoUs of the masks that
        can pass ``pred_iou_thresh``, and the index of each one's point. The model lock is
        taken per sub-batch."""
        with self.model_lock:
            sparse, _ = self.model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
        lows, ious, point_idx = [], [], []
        for start in range(0, n, self.decoder_batch_size):
            sl = slice(start, start + self.decoder_batch_size)
            with self.model_lock, self._precision():
                tokens, keys = decoder.transformer(sparse[sl])
                iou = decoder.iou(tokens).float()  # (b, 3)
                if self.pred_iou_thresh > 0.0:
                    keep = iou > self.pred_iou_thresh
                else:
                    keep = torch.ones_like(iou, dtype=torch.bool)
                self._counts.candidates += keep.numel()
                self._counts.below_iou += keep.numel() - int(keep.sum())
                rows = keep.any(dim=1)
                if not rows.any():
                    continue  # no mask of these points can pass: skip the upscaling head
                if not rows.all():
                    tokens, keys, keep, iou = tokens[rows], keys[rows], keep[rows], iou[rows]
                lows.append(decoder.masks(tokens, keys, transpose=True)[keep])  # (k, 256, 256)
            del keys
            ious.append(iou[keep])
            point_idx.append(torch.nonzero(rows).flatten()[:, None].expand(-1, 3)[keep].cpu().numpy() + start)
        return lows, ious, point_idx

    def _decode_with_predictor(self, embedding, points: np.ndarray):
        """``_decode`` for a ``PointBatchPredictor``: the same filter on predicted IoU, the
        logits transposed like ``EmbeddingDecoder.masks(..., transpose=True)``'s."""
        lows, ious, point_idx = [], [], []
        for start in range(0, len(points), self.decoder_batch_size):
            with self.model_lock, self._precision():
                low, iou = self.segmenter.decode_points(points[start : start + self.decoder_batch_size], embedding)
            iou = iou.float()
            keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
            if not keep.any():
                continue
            lows.append(low[keep].transpose(-1, -2).float())  # (k, w, h): x-major, as masks_from_logits takes
            ious.append(iou[keep])
            rows = torch.nonzero(keep)[:, 0].cpu().numpy()
            point_idx.append(rows + start)
        return lows, ious, point_idx

    def _finish_crop(self, batches: list[MaskSet], frame: CropFrame) -> MaskSet:
        """Box NMS within the crop (by predicted IoU), then crop -> image coordinates."""
        data = MaskSet.concat(batches)
        if len(data) == 0:
            return data
        keep = batched_nms(
            torch.as_tensor(data.boxes).float(),
            torch.as_tensor(data.iou_preds),
            torch.zeros(len(data)),
            iou_threshold=self.box_nms_thresh,
        )
        return self._uncrop(data.select(keep.numpy()), frame)

    @staticmethod
    def _uncrop(data: MaskSet, frame: CropFrame) -> MaskSet:
        x0, y0, _, _ = frame.crop_box
        return MaskSet(
            rles=data.rles,
            boxes=data.boxes + np.array([x0, y0, x0, y0]),
            areas=data.areas,
            iou_preds=data.iou_preds,
            stability=data.stability,
            points=data.points + np.array([x0, y0]),
            crop_boxes=data.crop_boxes,
        )

    def _finish(self, per_crop: list[MaskSet], n_crops: int) -> MaskSet:
        data = MaskSet.concat(per_crop)
        if n_crops > 1 and len(data):
            # Prefer masks from smaller crops
            cb = torch.as_tensor(data.crop_boxes)
            area = ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).float()
            keep = batched_nms(
                torch.as_tensor(data.boxes).float(),
                1 / area,
                torch.zeros(len(data)),
                iou_threshold=self.crop_nms_thresh,
            )
            data = data.select(keep.numpy())
        if self.min_mask_region_area > 0 and len(data):
            data = self._remove_small_regions(data)
        return data

    def _remove_small_regions(self, data: MaskSet) -> MaskSet:
        """Official ``postprocess_small_regions``: fill small holes, drop small islands, prefer
        unchanged masks in a final box NMS; mask by mask instead of one dense stack."""
        changed_rles, boxes, scores = {}, [], []
        for i, rle in enumerate(data.rles):
            mask = mask_utils.decode(rle).astype(bool)
            mask, holes = remove_small_regions(mask, self.min_mask_region_area, mode="holes")
            mask, islands = remove_small_regions(mask, self.min_mask_region_area, mode="islands")
            changed = holes or islands
            scores.append(0.0 if changed else 1.0)
            if changed:
                changed_rles[i] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                boxes.append(_box_of(mask))
            else:
                boxes.append(data.boxes[i])
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        keep = batched_nms(
            torch.as_tensor(boxes).float(),
            torch.as_tensor(scores),
            torch.zeros(len(boxes)),
            iou_threshold=max(self.box_nms_thresh, self.crop_nms_thresh),
        ).numpy()
        out = data.select(keep)
        for j, i in enumerate(keep):
            if i in changed_rles:
                out.rles[j] = changed_rles[i]
                out.boxes[j] = boxes[i]
                out.areas[j] = int(mask_utils.area(changed_rles[i]))
        return out

    # -- records -----------------------------------------------------------------------------
    def _records(self, data: MaskSet) -> list[dict]:
        records = []
        for i, rle in enumerate(data.rles):
            if self.output_mode == "coco_rle":
                seg = {"size": list(rle["size"]), "counts": rle["counts"].decode("utf-8")}
            elif self.output_mode == "binary_mask":
                seg = mask_utils.decode(rle).astype(bool)
            else:
                seg = uncompressed_rle(rle)
            x0, y0, x1, y1 = (int(v) for v in data.boxes[i])
            cx0, cy0, cx1, cy1 = (int(v) for v in data.crop_boxes[i])
            records.append(
                {
                    "segmentation": seg,
                    "area": int(data.areas[i]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": float(data.iou_preds[i]),
                    "point_coords": [data.points[i].tolist()],
                    "stability_score": float(data.stability[i]),
                    "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                }
            )
        return records


def uncompressed_rle(rle: dict) -> dict:
    """A pycocotools RLE as the official generator's uncompressed form: {"size": [h, w],
    "counts": [run lengths, column-major, starting with a run of zeros]}."""
    h, w = rle["size"]
    flat = mask_utils.decode(rle).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [h, w], "counts": counts.tolist()}


def _box_of(mask: np.ndarray) -> list[int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


class _Clock:
    """Progress bookkeeping: batches done / total, and an ETA from the measured time per
    batch plus the measured encoder time for each crop still to encode."""

    def __init__(self, total: int, crops: int):
        self.total = total
        self.crops = crops
        self.done = 0
        self.crop = 0
        self.t0 = time.perf_counter()
        self._mark = self.t0
        self._encode_s: list[float] = []
        self._batch_s = 0.0

    def start_crop(self, index: int) -> None:
        self.crop = index
        self._mark = time.perf_counter()

    def encoded(self) -> None:
        now = time.perf_counter()
        self._encode_s.append(now - self._mark)
        self._mark = now

    def batch_done(self) -> None:
        now = time.perf_counter()
        self._batch_s += now - self._mark
        self._mark = now
        self.done += 1

    def progress(self) -> Progress:
        eta = None
        if self.done:
            per_batch = self._batch_s / self.done
            crops_left = self.crops - len(self._encode_s)
            per_encode = sum(self._encode_s) / len(self._encode_s)
            eta = per_batch * (self.total - self.done) + per_encode * crops_left
        return Progress(self.done, self.total, time.perf_counter() - self.t0, eta, self.crop, self.crops)
