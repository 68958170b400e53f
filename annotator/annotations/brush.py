"""Brush and eraser strokes on a binary mask (what the canvas's brush tool sends).

A stroke is a polyline of ``points`` (image pixels, sub-pixel allowed) drawn with round
ends and joins ``radius`` pixels wide on each side; a single point is a dot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np


def apply_strokes(mask: np.ndarray, strokes: Sequence[Mapping]) -> np.ndarray:
    """``mask`` (not modified) with brush strokes painted in and eraser strokes cut out.

    A stroke is a polyline of ``points`` (image pixels, sub-pixel allowed) drawn with round
    ends and joins ``radius`` pixels wide on each side; a single point is a dot. Strokes
    apply in order, so erasing then painting the same place leaves it painted.
    """
    out = np.ascontiguousarray(mask, dtype=np.uint8).copy()
    shift = 4  # sub-pixel precision for OpenCV: coordinates in 1/16 pixel
    for k, stroke in enumerate(strokes):
        try:
            pts = np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2)
            radius = float(stroke["radius"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"stroke {k}: needs points [[x, y], ...] and a radius") from None
        if not pts.size or not np.isfinite(pts).all() or not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"stroke {k}: points must be finite and the radius positive")
        value = 0 if stroke.get("erase") else 1
        fixed = np.round(pts * (1 << shift)).astype(np.int64)
        # OpenCV fills every pixel the outline touches; a little less matches "pixel centres
        # within the radius"
        r_fixed = int(round(max(radius - 0.3, 0.25) * (1 << shift)))
        # OpenCV draws only inside int32 coordinates; far-off points are clamped near the image
        lim = (max(out.shape) + 2 * radius + 2) * (1 << shift)
        fixed = np.clip(fixed, -lim, lim)
        for x, y in fixed:
            cv2.circle(out, (int(x), int(y)), r_fixed, value, -1, cv2.LINE_8, shift)
        for (x0, y0), (x1, y1) in zip(fixed[:-1], fixed[1:], strict=True):
            # a segment as a filled quad between the two end circles (round joins)
            d = np.array([x1 - x0, y1 - y0], dtype=np.float64)
            n = np.hypot(*d)
            if n == 0:
                continue
            off = np.round(np.array([-d[1], d[0]]) / n * r_fixed).astype(np.int64)
            quad = np.array(
                [
                    [x0 + off[0], y0 + off[1]],
                    [x1 + off[0], y1 + off[1]],
                    [x1 - off[0], y1 - off[1]],
                    [x0 - off[0], y0 - off[1]],
                ],
                np.int32,
            )
            cv2.fillConvexPoly(out, quad, value, cv2.LINE_8, shift)
    return out.astype(bool)
