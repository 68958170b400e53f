"""Images in memory: the (H, W, 3) uint8 RGB arrays every stage works on.

Reading files into such arrays is ``annotator.formats.images``; this module only checks
and normalises an array, so the stages below formats (rendering, models) need no file code.
"""

from __future__ import annotations

import numpy as np


class ImageError(ValueError):
    """An image could not be read or used; the message is meant for the user."""


def as_rgb_array(image: np.ndarray) -> np.ndarray:
    """Validate an in-memory image: (H, W, 3) uint8, contiguous. Gray (H, W) is widened."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError("the image has no pixels")
    return np.ascontiguousarray(image)
