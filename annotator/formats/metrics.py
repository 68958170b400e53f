"""Segmentation metrics: mask IoU and Dice, semantic pixel accuracy and mIoU, class-agnostic
recall of predicted instances against ground truth, and COCO segm AP through pycocotools.

Masks may be dense (H, W) arrays or RLE dicts; instance comparisons run on RLE
(pycocotools ``iou``) without decoding.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np

from annotator.annotations import rle as rle_utils

RECALL_THRESHOLDS = (0.5, 0.75)
AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _as_rle(mask, size=None) -> dict:
    return rle_utils.normalize(mask, size)


def _inter_union(a, b) -> tuple[int, int, int, int]:
    ra, rb = _as_rle(a), _as_rle(b)
    if rle_utils.size_of(ra) != rle_utils.size_of(rb):
        raise ValueError(f"masks differ in size: {rle_utils.size_of(ra)} and {rle_utils.size_of(rb)}")
    area_a, area_b = (int(v) for v in rle_utils.areas([ra, rb]))
    inter = int(rle_utils.areas([rle_utils.intersection([ra, rb])])[0])
    return inter, area_a + area_b - inter, area_a, area_b


def iou(a, b) -> float:
    """|A ∩ B| / |A ∪ B|; 1.0 when both masks are empty (they agree)."""
    inter, union, _, _ = _inter_union(a, b)
    return inter / union if union else 1.0


def dice(a, b) -> float:
    """2 |A ∩ B| / (|A| + |B|); 1.0 when both masks are empty."""
    inter, _, area_a, area_b = _inter_union(a, b)
    return 2 * inter / (area_a + area_b) if area_a + area_b else 1.0


def iou_matrix(pred: Sequence, gt: Sequence) -> np.ndarray:
    """(len(pred), len(gt)) IoU of every prediction with every ground-truth mask."""
    return rle_utils.iou_matrix([_as_rle(m) for m in pred], [_as_rle(m) for m in gt])


def containment(masks: Sequence) -> np.ndarray:
    """(N, N) with [i, j] = |M_i ∩ M_j| / |M_i|: how much of mask i lies inside mask j."""
    rles = [_as_rle(m) for m in masks]
    return rle_utils.iou_matrix(rles, rles, crowd=[True] * len(rles))


# -- semantic ---------------------------------------------------------------------------------
def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """(C, C) pixel counts, rows ground truth, columns prediction."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} and {gt.shape}")
    keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    p, g = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    for name, a in (("prediction", p), ("ground truth", g)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has class values outside 0..{num_classes - 1}")
    return np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = None) -> float:
    """Fraction of (non-ignored) pixels whose class is right."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} and {gt.shape}")
    keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    n = int(keep.sum())
    return float((pred[keep] == gt[keep]).sum() / n) if n else float("nan")


def class_ious(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix; NaN for classes in neither map."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(
    pred: np.ndarray, gt: np.ndarray, num_classes: int | None = None, ignore_index: int | None = None
) -> float:
    """Mean over classes present in either map of the per-class IoU."""
    if num_classes is None:
        values = [np.asarray(pred).max(initial=0), np.asarray(gt).max(initial=0)]
        num_classes = int(max(values)) + 1
    ious = class_ious(confusion_matrix(pred, gt, num_classes, ignore_index))
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


# -- instances ------------------------------------------------------------------------------
def best_ious(pred: Sequence, gt: Sequence) -> np.ndarray:
    """For each ground-truth mask, its highest IoU with any prediction (0 with none)."""
    m = iou_matrix(pred, gt)
    return m.max(axis=0) if m.shape[0] else np.zeros(len(gt))


def recall(pred: Sequence, gt: Sequence, thresholds: Sequence[float] = RECALL_THRESHOLDS) -> dict[float, float]:
    """Class-agnostic recall: the fraction of ground-truth masks that some prediction
    overlaps with IoU >= t (several ground truths may be found by one prediction)."""
    best = best_ious(pred, gt)
    return {t: float((best >= t).mean()) if best.size else float("nan") for t in thresholds}


@dataclass
class EvalReport:
    """What ``evaluate`` measured over a set of images."""

    images: int
    gt_instances: int
    pred_instances: int
    recall: dict[float, float]
    mean_best_iou: float
    pixel_accuracy: float | None = None
    miou: float | None = None
    ap: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        def fmt(v):
            return "n/a" if v is None else ("nan" if v != v else f"{v:.4f}")

        rows = [
            ("images", str(self.images)),
            ("ground-truth instances", str(self.gt_instances)),
            ("predicted instances", str(self.pred_instances)),
        ]
        rows += [(f"recall@{t:g} (class-agnostic)", fmt(v)) for t, v in self.recall.items()]
        rows += [
            ("mean best IoU", fmt(self.mean_best_iou)),
            ("pixel accuracy", fmt(self.pixel_accuracy)),
            ("mIoU", fmt(self.miou)),
        ]
        for name in AP_NAMES:
            rows.append((f"segm {name}", fmt(self.ap.get(name) if self.ap else None)))
        return rows

    def table(self) -> str:
        rows = [("metric", "value")] + self.rows()
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b:>8}" for a, b in rows]
        lines.insert(1, "-" * (width + 10))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "gt_instances": self.gt_instances,
            "pred_instances": self.pred_instances,
            "recall": {str(k): v for k, v in self.recall.items()},
            "mean_best_iou": self.mean_best_iou,
            "pixel_accuracy": self.pixel_accuracy,
            "miou": self.miou,
            "ap": self.ap,
            "notes": self.notes,
        }


def _names(path: str) -> tuple[str, str]:
    name = PureWindowsPath(PurePosixPath(str(path)).name).name
    return name, name.rsplit(".", 1)[0]


def match_images(pred, gt) -> dict:
    """Map prediction image ids to ground-truth image ids: by file name, by file name
    without extension (SAM's amg.py names its output after the image), then by id."""
    gt_sizes = {i["id"]: (i["height"], i["width"]) for i in gt.images}

    def by(key_fn):
        index: dict = {}
        for img in gt.images:
            index.setdefault(key_fn(img), []).append(img["id"])
        out = {}
        for img in pred.images:
            hits = index.get(key_fn(img), [])
            if len(hits) != 1 or gt_sizes[hits[0]] != (img["height"], img["width"]):
                return None
            out[img["id"]] = hits[0]
        return out

    strategies = (
        lambda i: _names(i.get("file_name", ""))[0] or None,
        lambda i: _names(i.get("file_name", ""))[1] or None,
        lambda i: i["id"],
    )
    for fn in strategies:
        mapping = by(fn)
        if mapping is not None:
            return mapping
    names = [i.get("file_name", i["id"]) for i in pred.images]
    raise ValueError(
        f"cannot match the predicted images {names[:5]} to the ground truth's images "
        "(by file name or id, with equal sizes)"
    )


def _semantic_maps(dataset, image_id, class_index: dict, size) -> np.ndarray:
    from annotator.annotations.render import label_map_from_rles

    anns = sorted(dataset.annotations_for(image_id), key=lambda a: a.get("z", 0))
    names = dataset.category_names
    labels = label_map_from_rles([a["segmentation"] for a in anns], size)
    # a mask without a category paints background
    lut = np.array([0] + [class_index.get(names.get(a.get("category_id")), 0) for a in anns], dtype=np.int64)
    return lut[labels]


def coco_segm_ap(pred, gt, image_map: dict | None = None, max_dets: int = 100) -> dict[str, float]:
    """COCO segm AP/AR (pycocotools COCOeval) of categorised predictions, categories
    matched by name. Scores: ``score``, else ``predicted_iou``, else 1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from annotator.formats.coco import to_json

    image_map = image_map or match_images(pred, gt)
    gt_ids = {c["name"]: c["id"] for c in gt.categories}
    pred_names = pred.category_names
    results = []
    for a in pred.annotations:
        name = pred_names.get(a.get("category_id"))
        if name not in gt_ids:
            continue
        score = a.get("score", a.get("predicted_iou", 1.0))
        results.append(
            {
                "image_id": image_map[a["image_id"]],
                "category_id": gt_ids[name],
                "segmentation": rle_utils.to_json(a["segmentation"]),
                "score": float(score),
            }
        )
    if not results:
        return {name: 0.0 for name in AP_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco = COCO()
        gt_coco.dataset = to_json(gt)
        # COCOeval records a match as the matched annotation's id and tests it for truth,
        # so an annotation with id 0 (labelme writes them) would never count as found
        for k, a in enumerate(gt_coco.dataset["annotations"]):
            a["id"] = k + 1
        gt_coco.createIndex()
        dt_coco = gt_coco.loadRes(results)
        ev = COCOeval(gt_coco, dt_coco, "segm")
        ev.params.imgIds = sorted(set(image_map.values()))
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(AP_NAMES, ev.stats)}


def evaluate(pred, gt, *, thresholds: Sequence[float] = RECALL_THRESHOLDS) -> EvalReport:
    """Compare a predicted ``CocoDataset`` with a ground-truth one, image by image.

    Always: class-agnostic recall and mean best IoU (crowd ground truth left out). When
    both carry categories: pixel accuracy and mIoU of the semantic maps (topmost mask
    wins; classes = ground-truth category names + background) and COCO segm AP.
    """
    image_map = match_images(pred, gt)
    best, n_pred, notes = [], 0, []
    for pid, gid in image_map.items():
        p = [a["segmentation"] for a in pred.annotations_for(pid)]
        g = [a["segmentation"] for a in gt.annotations_for(gid) if not a.get("iscrowd")]
        n_pred += len(p)
        best.append(best_ious(p, g))
    best = np.concatenate(best) if best else np.zeros(0)
    rec = {t: float((best >= t).mean()) if best.size else float("nan") for t in thresholds}
    report = EvalReport(
        len(image_map), int(best.size), n_pred, rec, float(best.mean()) if best.size else float("nan"), notes=notes
    )

    pred_has = bool(pred.categories) and any(a.get("category_id") is not None for a in pred.annotations)
    gt_has = bool(gt.categories)
    if not (pred_has and gt_has):
        notes.append(
            "pixel accuracy, mIoU and AP need categories in both files "
            f"(predictions: {'yes' if pred_has else 'no'}, ground truth: {'yes' if gt_has else 'no'})"
        )
        return report
    gt_names = [c["name"] for c in gt.categories]
    class_index = {name: i + 1 for i, name in enumerate(gt_names)}
    unknown = sorted({n for n in pred.category_names.values() if n not in class_index})
    if unknown:
        notes.append(f"predicted categories not in the ground truth count as wrong: {unknown}")
        for n in unknown:
            class_index[n] = len(class_index) + 1
    num_classes = len(class_index) + 1
    conf = np.zeros((num_classes, num_classes), np.int64)
    gt_sizes = {i["id"]: (i["height"], i["width"]) for i in gt.images}
    for pid, gid in image_map.items():
        size = gt_sizes[gid]
        pm = _semantic_maps(pred, pid, class_index, size)
        gm = _semantic_maps(gt, gid, class_index, size)
        conf += confusion_matrix(pm, gm, num_classes)
    total = conf.sum()
    report.pixel_accuracy = float(np.trace(conf) / total) if total else float("nan")
    ious = class_ious(conf)
    report.miou = float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")
    report.ap = coco_segm_ap(pred, gt, image_map)
    return report
