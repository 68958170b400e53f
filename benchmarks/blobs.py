"""Realistic synthetic masks for benchmarks: random blob-shaped polygons (some with holes),
sizes spread log-uniformly like SAM's output, made as RLE without ever holding a
full-size dense mask per blob."""

from __future__ import annotations

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils


def blob_crop(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A bool blob about ``2 * radius`` across: a star-shaped polygon, sometimes holed."""
    n = int(rng.integers(8, 24))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.55, 1.0, n)
    xs = radius + radii * np.cos(angles) * rng.uniform(0.6, 1.0)
    ys = radius + radii * np.sin(angles)
    size = int(2 * radius) + 2
    crop = np.zeros((size, size), np.uint8)
    cv2.fillPoly(crop, [np.round(np.stack([xs, ys], 1)).astype(np.int32)], 1)
    if radius > 12 and rng.random() < 0.3:
        c = (int(radius), int(radius))
        axes = (int(radius * rng.uniform(0.1, 0.3)), int(radius * rng.uniform(0.1, 0.3)))
        cv2.ellipse(crop, c, axes, float(rng.uniform(0, 180)), 0, 360, 0, -1)
    return crop.astype(bool)


def place(crop: np.ndarray, x0: int, y0: int, h: int, w: int) -> dict:
    """RLE of ``crop`` pasted at (x0, y0) in an h x w image (clipped), via a column strip."""
    ch, cw = crop.shape
    x1, y1 = min(x0 + cw, w), min(y0 + ch, h)
    strip = np.zeros((h, x1 - x0), bool)
    strip[y0:y1] = crop[: y1 - y0, : x1 - x0]
    runs = rle_utils.run_lengths(rle_utils.encode(strip)["counts"]).copy()
    runs[0] += x0 * h
    tail = (w - x1) * h
    if runs.size % 2:  # strip ends in background
        runs[-1] += tail
    elif tail:
        runs = np.append(runs, tail)
    return rle_utils.from_counts(runs, (h, w))


def blob_rles(
    h: int, w: int, n: int, seed: int = 0, min_radius: float = 8, max_radius: float | None = None
) -> list[dict]:
    rng = np.random.default_rng(seed)
    max_radius = max_radius or min(h, w) / 4
    out = []
    while len(out) < n:
        r = float(np.exp(rng.uniform(np.log(min_radius), np.log(max_radius))))
        crop = blob_crop(rng, r)
        x0 = int(rng.integers(0, max(1, w - crop.shape[1] // 2)))
        y0 = int(rng.integers(0, max(1, h - crop.shape[0] // 2)))
        rle = place(crop, x0, y0, h, w)
        if rle_utils.areas([rle])[0] > 0:
            out.append(rle)
    return out
