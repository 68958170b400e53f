"""One annotation: an immutable, plain record whose mask is compressed RLE bytes.

A document state shares unchanged records (and their RLE bytes) between edits, so an
``Annotation`` is never mutated: an edit makes a new one (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from annotator.annotations import rle as rle_utils

SOURCES = ("prompt", "auto", "import", "merge", "concept")  # concept: SAM 3 "find all"
REVIEW_STATES = ("pending", "accepted", "rejected")

# Fields a caller may set through ``add``/``update``; the rest (id, geometry, provenance)
# the document owns.
EDITABLE_FIELDS = (
    "label",
    "source",
    "prompts",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "visible",
    "review",
    "meta",
)


def _plain(value):
    """JSON-compatible plain Python (numpy scalars and arrays become numbers and lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot store a {type(value).__name__} in an annotation")


def _score(value, name: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


@dataclass(frozen=True)
class Annotation:
    """One mask and what is known about it. Immutable: edits make new records."""

    id: int
    size: tuple[int, int]  # (h, w)
    counts: bytes  # compressed COCO RLE
    area: int
    bbox: tuple[float, float, float, float]  # x, y, w, h
    label: str | None = None
    source: str = "prompt"
    prompts: Any = None  # e.g. {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}
    predicted_iou: float | None = None
    stability_score: float | None = None
    point_coords: Any = None  # SAM's automatic generator: the grid point(s) that made it
    crop_box: Any = None  # SAM's automatic generator: x, y, w, h of the crop it came from
    visible: bool = True
    review: str = "pending"
    parents: tuple[int, ...] = ()  # ids merged into this one
    subtracted: tuple[int, ...] = ()  # ids of masks cut out of this one
    meta: Any = None  # anything else worth keeping (e.g. fields of an imported COCO annotation)

    @property
    def rle(self) -> dict:
        return {"size": [self.size[0], self.size[1]], "counts": self.counts}

    def mask(self) -> np.ndarray:
        return rle_utils.decode(self.rle)

    def to_record(self, z: int | None = None) -> dict:
        """A JSON-serialisable dict (RLE counts as str)."""
        rec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        rec["size"] = list(self.size)
        rec["counts"] = self.counts.decode("ascii")
        rec["bbox"] = list(self.bbox)
        rec["parents"] = list(self.parents)
        rec["subtracted"] = list(self.subtracted)
        if z is not None:
            rec["z"] = z
        return rec

    @classmethod
    def from_record(cls, rec: Mapping) -> Annotation:
        rec = dict(rec)
        rec.pop("z", None)
        rle = rle_utils.normalize({"size": rec.pop("size"), "counts": rec.pop("counts")})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(rec) - known
        if unknown:
            raise ValueError(f"annotation record has unknown fields: {sorted(unknown)}")
        rec.pop("area", None)
        rec.pop("bbox", None)
        return make_annotation(int(rec.pop("id")), rle, **rec)


def make_annotation(ann_id: int, rle: dict, **fields) -> Annotation:
    """Build a validated record; area and bbox come from the mask."""
    size = rle_utils.size_of(rle)
    area = int(rle_utils.areas([rle])[0])
    bbox = tuple(float(v) for v in rle_utils.bboxes([rle])[0])
    return updated(Annotation(ann_id, size, rle["counts"], area, bbox), fields)


def updated(ann: Annotation, fields: Mapping) -> Annotation:
    """``ann`` with ``fields`` changed, checked as the document checks an edit."""
    unknown = set(fields) - set(EDITABLE_FIELDS) - {"parents", "subtracted"}
    if unknown:
        raise TypeError(f"unknown annotation fields: {sorted(unknown)}")
    f = dict(fields)
    if "source" in f and f["source"] not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {f['source']!r}")
    if "review" in f and f["review"] not in REVIEW_STATES:
        raise ValueError(f"review must be one of {REVIEW_STATES}, got {f['review']!r}")
    if "label" in f and f["label"] is not None:
        f["label"] = str(f["label"])
    for name in ("predicted_iou", "stability_score"):
        if name in f:
            f[name] = _score(f[name], name)
    for name in ("prompts", "point_coords", "crop_box", "meta"):
        if name in f:
            f[name] = _plain(f[name])
    if "visible" in f:
        f["visible"] = bool(f["visible"])
    for name in ("parents", "subtracted"):
        if name in f:
            f[name] = tuple(int(i) for i in f[name])
    return dataclasses.replace(ann, **f) if f else ann
