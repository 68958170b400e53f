"""What the app's canvas shows on top of the mask overlay: the live prompt and its markers.

Pure functions over RGB uint8 arrays. The canvas may show a downscaled copy of a large
image (``display_scale``); masks and prompts stay in original image pixels and are mapped
here, at drawing time only.
"""

from __future__ import annotations

import cv2
import numpy as np

DISPLAY_MAX_SIDE = 2048
PROMPT_COLOR = (30, 144, 255)
PROMPT_EDGE = (255, 235, 59)
POSITIVE_COLOR = (46, 204, 64)
NEGATIVE_COLOR = (231, 76, 60)
BOX_COLOR = (255, 235, 59)
UNCOVERED_COLOR = (255, 0, 200)


def display_scale(size_hw: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Display pixels per image pixel: 1 unless the longest side exceeds ``max_side``."""
    return min(1.0, max_side / max(size_hw))


def display_size(size_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of the displayed image."""
    h, w = size_hw
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_display(image: np.ndarray, scale: float) -> np.ndarray:
    """The image as the canvas shows it (area-averaged when downscaled)."""
    if scale == 1.0:
        return image
    h, w = display_size(image.shape[:2], scale)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def to_image_xy(x: float, y: float, scale: float, size_hw: tuple[int, int]) -> tuple[float, float]:
    """A canvas click (display pixels) in original image pixels, clamped to the image.

    The browser reports integer pixels of the served image; the centre of that display
    pixel is used so a click on a downscaled canvas lands mid-cell, not on its corner.
    """
    h, w = size_hw
    if scale != 1.0:
        x, y = (x + 0.5) / scale - 0.5, (y + 0.5) / scale - 0.5
    return float(min(max(x, 0.0), w - 1)), float(min(max(y, 0.0), h - 1))


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(size_hw):
        return mask
    h, w = size_hw
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def tint(canvas: np.ndarray, mask: np.ndarray, color, alpha: float, edge=None, edge_width: int = 2) -> None:
    """Blend ``color`` into ``canvas`` where ``mask`` is set, in place, touching only the
    mask's bounding box; optionally paint the mask's inner edge (``edge_width`` px) in ``edge``.

    All per-pixel work is OpenCV on uint8 (this runs on every click, on images of several
    megapixels)."""
    m8 = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(m8))
    if w == 0 or h == 0:
        return
    roi, m = canvas[y : y + h, x : x + w], m8[y : y + h, x : x + w]
    tinted = cv2.addWeighted(roi, 1.0 - alpha, roi, 0.0, 0.0)
    cv2.add(tinted, tuple(alpha * float(c) for c in color) + (0.0,), dst=tinted)
    cv2.copyTo(tinted, m, roi)
    if edge is not None:
        # inner edge: mask pixels within edge_width of the outside (the bounding box border
        # counts as outside, so masks touching the image border are closed too)
        k = np.ones((2 * edge_width + 1, 2 * edge_width + 1), np.uint8)
        inner = cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        cv2.rectangle(tinted, (0, 0), (w, h), tuple(int(c) for c in edge), -1)  # a fast solid fill
        cv2.copyTo(tinted, cv2.subtract(m, inner), roi)


def draw_prompt(canvas: np.ndarray, prompt, scale: float, alpha: float = 0.5) -> np.ndarray:
    """``canvas`` (display pixels, not modified) with the prompt's current candidate mask,
    its points (green positive, red negative), its box and a half-drawn box's corner."""
    out = canvas.copy()
    marker = max(5, round(0.007 * max(out.shape[:2])))
    mask = prompt.mask_at(out.shape[:2])  # only the shown candidate, at the canvas's size
    if mask is not None:
        tint(out, resize_mask(mask, out.shape[:2]), PROMPT_COLOR, max(alpha, 0.45), PROMPT_EDGE)
    if prompt.box is not None:
        x0, y0, x1, y1 = (round(v * scale) for v in prompt.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 0), 4, cv2.LINE_AA)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOR, 2, cv2.LINE_AA)
    for (x, y), label in zip(prompt.points, prompt.labels):
        c = (round(x * scale), round(y * scale))
        cv2.circle(out, c, marker + 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, c, marker, POSITIVE_COLOR if label else NEGATIVE_COLOR, -1, cv2.LINE_AA)
        if not label:
            d = marker // 2
            cv2.line(out, (c[0] - d, c[1]), (c[0] + d, c[1]), (255, 255, 255), 2, cv2.LINE_AA)
    if prompt.corner is not None:
        x, y = (round(v * scale) for v in prompt.corner)
        r = 3 * marker
        for color, width in (((0, 0, 0), 4), (BOX_COLOR, 2)):
            cv2.line(out, (x - r, y), (x + r, y), color, width, cv2.LINE_AA)
            cv2.line(out, (x, y - r), (x, y + r), color, width, cv2.LINE_AA)
    return out


def coverage_map(image: np.ndarray, covered: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """``image`` with every pixel that ``covered`` leaves out tinted magenta."""
    out = image.copy()
    tint(out, ~covered, UNCOVERED_COLOR, alpha)
    return out
