"""Masks as polygons: exact outlines with holes and parts, an optional tolerance, and the cost.

Outlines run on the pixel edges: each is traced on the mask's bounding box upsampled 2x (a
contour of that upsampled image, shifted back by a quarter pixel), so COCO's rasteriser,
which fills pixel centres by the even-odd rule, gives back exactly the mask's pixels. Only
the box is decoded from the RLE, never the whole image.

A hole is joined to the ring around it by a zero-width bridge (out along a line and back
along the same line), which the even-odd rule ignores, so a hole stays a hole wherever one
ring has to carry it: in COCO each part is one ring with its holes; in YOLO, where one line
is one object, all parts and holes go into one ring the same way. ``tolerance`` (pixels)
simplifies each ring with Douglas-Peucker (``cv2.approxPolyDP``); every export reports the
IoU of what its file holds against the mask, so the cost of a tolerance is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils

# What a ring is in the file, in pixels, after the writer's rounding (identity: exact floats).
Quantize = Callable[[np.ndarray], np.ndarray]


@dataclass
class Part:
    """One connected part of a mask: its outer ring and the rings of its holes, as (k, 2)
    float arrays of x, y pixel coordinates."""

    outer: np.ndarray
    holes: list = field(default_factory=list)


@dataclass
class Polygons:
    """A mask as polygons, and what they cost: ``rings`` as written (pixels), ``rle`` what a
    reader rasterises from them, ``iou`` of that against the mask."""

    rings: list
    rle: dict
    iou: float
    parts: int
    holes: int
    exact_fallback: bool = False  # the tolerance erased the mask, so it was written exactly


def trace_crop(
    crop: np.ndarray, x0: int = 0, y0: int = 0, tolerance: float = 0.0, *, transposed: bool = False
) -> list[Part]:
    """The parts of a dense bool crop whose top-left pixel is (x0, y0) in the image; 8-connected
    pixels form one part, 4-connected background inside a part is a hole. ``transposed``: the
    crop is given as (width, height), as an RLE decodes without a copy."""
    crop = np.asarray(crop, dtype=bool)
    if crop.size == 0 or not crop.any():
        return []
    bh, bw = crop.shape
    up = np.zeros((2 * bh + 2, 2 * bw + 2), np.uint8)
    up[1:-1, 1:-1] = cv2.resize(crop.view(np.uint8), (2 * bw, 2 * bh), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    offset = np.array([x0, y0], np.float64)
    xy = [1, 0] if transposed else [0, 1]

    def ring(c: np.ndarray) -> np.ndarray:
        if tolerance > 0 and len(c) > 3:
            approx = cv2.approxPolyDP(c, 2 * tolerance, True)
            if len(approx) >= 3:
                c = approx
        # the upsampled pixel u (after the 1-pixel border) sits a quarter pixel inside the
        # original pixel edge at (u - 0.5) / 2
        return (c[:, 0, xy].astype(np.float64) - 0.5) / 2 + offset

    parts = []
    for i, c in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue  # a hole, collected with its outer ring below
        holes = []
        j = hierarchy[i][2]
        while j != -1:
            holes.append(ring(contours[j]))
            j = hierarchy[j][0]
        parts.append(Part(ring(c), holes))
    return parts


def trace(rle: dict, tolerance: float = 0.0, runs: np.ndarray | None = None) -> list[Part]:
    """The parts of an RLE mask, decoding only its bounding box (``runs``: its run lengths,
    if already decoded)."""
    crop, x0, y0 = rle_utils.decode_bbox(rle, runs)
    return trace_crop(crop.T, x0, y0, tolerance, transposed=True)  # crop.T: contiguous, no copy


def bridge(ring: np.ndarray, other: np.ndarray) -> np.ndarray:
    """One ring holding both: walk ``ring`` to its vertex nearest ``other``'s leftmost vertex,
    around ``other`` and back the same way."""
    j = int(np.argmin(other[:, 0]))
    i = int(np.argmin(((ring - other[j]) ** 2).sum(axis=1)))
    return np.concatenate([ring[: i + 1], other[j:], other[: j + 1], ring[i:]])


def part_rings(parts: Sequence[Part]) -> list[np.ndarray]:
    """One ring per part with its holes bridged in (COCO: the rings of one annotation are
    unioned, so a hole cannot be a ring of its own)."""
    out = []
    for p in parts:
        r = p.outer
        for hole in p.holes:
            r = bridge(r, hole)
        out.append(r)
    return out


def single_ring(parts: Sequence[Part]) -> list[np.ndarray]:
    """Every part and hole bridged into one ring (YOLO: one line is one object)."""
    rings = part_rings(parts)
    if not rings:
        return []
    r = rings[0]
    for other in rings[1:]:
        r = bridge(r, other)
    return [r]


def polygonise(
    rle: dict,
    tolerance: float = 0.0,
    *,
    single: bool = False,
    quantize: Quantize | None = None,
    runs: np.ndarray | None = None,
) -> Polygons:
    """The mask as rings (one per part, or ``single``: one for all), with the RLE a reader of
    the written file gets (``quantize`` applies the writer's rounding) and its IoU against
    the mask. At tolerance 0 the outline is exact by construction, so the mask itself is what
    a reader gets (``convert.export`` proves it mask by mask when it reads the file back);
    otherwise the rings are rasterised to measure the cost, and a tolerance that would erase
    the mask falls back to the exact outline."""
    h, w = rle_utils.size_of(rle)
    parts = trace(rle, tolerance, runs)
    if tolerance <= 0:
        rings = _rings(parts, single, quantize)
        return Polygons(rings, rle, 1.0 if parts else 0.0, len(parts), sum(len(p.holes) for p in parts))
    result = _measure(rle, parts, single, quantize, h, w)
    if result.iou == 0.0 and parts:
        result = polygonise(rle, 0.0, single=single, quantize=quantize, runs=runs)
        result.exact_fallback = True
    return result


def _rings(parts, single, quantize) -> list:
    rings = single_ring(parts) if single else part_rings(parts)
    return [quantize(r) for r in rings] if quantize is not None else rings


def _measure(rle, parts, single, quantize, h, w) -> Polygons:
    rings = _rings(parts, single, quantize)
    back = rasterise(rings, h, w)
    iou = float(rle_utils.iou_pairs([back], [rle])[0])
    return Polygons(rings, back, iou, len(parts), sum(len(p.holes) for p in parts))


def rasterise(rings: Sequence[np.ndarray], height: int, width: int) -> dict:
    """What COCO (and our YOLO and labelme readers) make of the rings: their union, each
    filled by the even-odd rule."""
    return rle_utils.from_polygons([np.asarray(r).reshape(-1) for r in rings], height, width)


def each_with_runs(rles: Sequence[dict], chunk: int = 256):
    """``(rle, runs)`` for each mask, run lengths decoded a chunk of masks at a time (one
    vectorised pass instead of one per mask)."""
    for i in range(0, len(rles), chunk):
        part = rles[i : i + chunk]
        values, offsets = rle_utils.run_lengths_many([r["counts"] for r in part])
        for k, r in enumerate(part):
            yield r, values[offsets[k] : offsets[k + 1]]


def flat(ring: np.ndarray, decimals: int = 2) -> list[float]:
    """A ring as the flat ``[x0, y0, x1, y1, ...]`` list COCO and friends write. Exact outlines
    sit on quarter pixels, so two decimals lose nothing."""
    return np.round(np.asarray(ring, np.float64), decimals).reshape(-1).tolist()


def round_ring(ring: np.ndarray, decimals: int = 2) -> np.ndarray:
    """The ring as ``flat`` writes it: the ``quantize`` of writers that round to decimals."""
    return np.round(np.asarray(ring, np.float64), decimals)
