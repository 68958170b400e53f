"""Reading images the way the user sees them: RGB uint8, EXIF orientation applied."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from annotator.annotations.pixels import ImageError, as_rgb_array

DEFAULT_MAX_PIXELS = 50_000_000


class ImageTooLarge(ImageError):
    """An image has more pixels than allowed (found from its header, before decoding)."""


def load_image(source, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, notes: list[str] | None = None) -> np.ndarray:
    """``source`` (a path, bytes, a file object or a PIL image) as an (H, W, 3) uint8 RGB array.

    EXIF orientation is applied, so prompts and masks line up with what a viewer shows.
    Grayscale, palette, CMYK, 16-bit and alpha images are converted (alpha is dropped).
    An animated image gives its first frame; what the user should know about such a
    conversion is appended to ``notes`` when given.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "image"
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError("the file is empty (0 bytes)")
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise ImageError(f"no such file: {name}")
            if Path(source).stat().st_size == 0:
                raise ImageError(f"{Path(name).name} is empty (0 bytes)")
        try:
            img = Image.open(source)
        except UnidentifiedImageError:
            raise ImageError(f"{Path(name).name} is not an image PIL can read") from None
        except Image.DecompressionBombError:
            raise ImageTooLarge(
                f"{Path(name).name} claims more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                "megapixels (a decompression bomb?)"
            ) from None
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        raise ImageTooLarge(
            f"{Path(name).name} is {w}x{h} = {w * h / 1e6:.3g} megapixels; the limit is "
            f"{max_pixels / 1e6:.3g} megapixels"
        )
    # (a camera's MPO JPEG holds a second, hidden frame: not an animation)
    if getattr(img, "is_animated", False) and img.format != "MPO" and notes is not None:
        notes.append(f"{Path(name).name} is animated ({img.n_frames} frames); the first frame is used")
    try:
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{Path(name).name} is damaged or truncated: {e}") from None


def to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 0
        a = a * (255.0 / hi) if hi > 255 else a
        return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB").convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def oriented_size(source) -> tuple[int, int]:
    """(height, width) as the user sees the image (EXIF orientation applied), read from
    the header without decoding the pixels."""
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the upload"
    try:
        with Image.open(source) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image PIL can read") from None
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{name} cannot be read: {e}") from None
    if w * h > DEFAULT_MAX_PIXELS:
        raise ImageError(
            f"{name} is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is {DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels"
        )
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageTooLarge",
    "as_rgb_array",
    "file_sha256",
    "load_image",
    "oriented_size",
]
