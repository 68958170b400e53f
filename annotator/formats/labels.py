"""PNG label masks: an instance-id PNG and a class-index PNG per image, in and out.

The topmost mask wins where masks overlap (``render.label_map_from_rles``), so a label PNG
holds overlapping masks only as far as they are visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import AnnotationDocument
from annotator.annotations.render import label_map_from_rles


class LabelMapError(ValueError):
    """A label PNG cannot be read as labels; the message names the file."""


def _write_png(path, array: np.ndarray) -> Path:
    path = Path(path)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
    return path


def _read_png(path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise LabelMapError(f"{path}: not a PNG that can be read")
    if arr.ndim != 2:
        raise LabelMapError(f"{path}: a label mask must be single-channel, got {arr.shape[2]} channels")
    return arr


def write_instance_png(path, doc: AnnotationDocument, *, include_rejected: bool = False) -> Path:
    """A 16-bit PNG whose pixels hold the id of the topmost annotation there (0: none)."""
    anns = [a for a in doc.annotations if include_rejected or a.review != "rejected"]
    if anns and max(a.id for a in anns) > 65535:
        raise ValueError("annotation ids above 65535 do not fit a 16-bit PNG")
    labels = label_map_from_rles([a.rle for a in anns], doc.size)
    ids = np.array([0] + [a.id for a in anns], dtype=np.uint16)
    return _write_png(path, ids[labels])


def read_instance_png(path) -> dict[int, dict]:
    """Instance masks from a label PNG: {id: RLE} for every non-zero value."""
    arr = _read_png(path)
    return {int(v): rle_utils.encode(arr == v) for v in np.unique(arr) if v != 0}


def write_semantic_png(
    path, doc: AnnotationDocument, classes: Sequence[str], *, include_rejected: bool = False
) -> Path:
    """A PNG of class indices (``classes[i]`` is value ``i``; ``classes[0]`` is the
    background), topmost mask winning; 8-bit for up to 256 classes, else 16-bit."""
    index = {name: i for i, name in enumerate(classes)}
    anns = [a for a in doc.annotations if include_rejected or a.review != "rejected"]
    unknown = sorted({str(a.label) for a in anns if a.label not in index})
    if unknown:
        raise ValueError(f"labels not among the classes: {unknown} (unlabeled masks show as 'None')")
    dtype = np.uint8 if len(classes) <= 256 else np.uint16
    labels = label_map_from_rles([a.rle for a in anns], doc.size)
    lut = np.array([0] + [index[a.label] for a in anns], dtype=dtype)
    return _write_png(path, lut[labels])


def read_semantic_png(path, classes: Sequence[str]) -> dict[str, dict]:
    """{class name: RLE} for every class present in a semantic PNG (background skipped)."""
    arr = _read_png(path)
    out = {}
    for v in np.unique(arr):
        if v == 0:
            continue
        if v >= len(classes):
            raise LabelMapError(f"{path}: value {int(v)} has no class (there are {len(classes)})")
        out[classes[int(v)]] = rle_utils.encode(arr == v)
    return out
