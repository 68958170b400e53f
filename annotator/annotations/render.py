"""Mask overlays: many masks composited on a photo in one pass over its pixels.

Instead of blending every mask over the whole image (cost: masks x pixels), the masks are
first painted into a label map, each pixel holding the topmost mask that covers it, by
writing their RLE runs straight into a column-major array (cost: runs + mask pixels, no
decoding to dense masks). The photo is then blended once with a per-label color and
alpha lookup. The label map depends only on the masks and their paint order, so it is
cached by content: changing alpha, colors, outlines or the selection highlight re-uses it.

Paint order, bottom to top: dimmed (rejected) masks, the others, the selection, each group
in the given z-order. Hidden masks are not painted; a hidden mask that is selected gets a
thin dashed outline, so the selection stays visible. A pixel no mask (or outline) touches
is returned byte-for-byte unchanged.
"""

from __future__ import annotations

import colorsys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.pixels import as_rgb_array

HIGHLIGHT = (255, 255, 255)
REJECTED_GRAY = (128, 128, 128)
DASH = 4  # pixels per dash (and per gap) of a hidden, selected mask's outline
# A run-painting loop in Python costs about the same as writing ~150 pixels through an
# index array, so masks with long runs are painted run by run, the rest through indices.
_SLICE_RUN_LENGTH = 150


def palette(keys: Iterable[int] | int) -> np.ndarray:
    """Distinct, stable colors: (N, 3) uint8, one per key (or per index when given a count).

    Hues step by the golden angle so neighbouring ids get far-apart colors, and a key
    always gets the same color (a mask keeps its color when others are deleted).
    """
    keys = np.arange(keys) if isinstance(keys, (int, np.integer)) else np.asarray(list(keys))
    out = np.empty((len(keys), 3), np.uint8)
    for i, k in enumerate(keys.tolist()):
        hue = (k * 0.618033988749895) % 1.0
        sat = 0.65 + 0.3 * ((k * 7) % 3) / 2
        val = 0.95 - 0.15 * ((k * 5) % 2)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255)
    return out


# -- label maps -----------------------------------------------------------------------------
def _label_dtype(n: int):
    return np.uint16 if n < np.iinfo(np.uint16).max else np.uint32


def _paint_runs(flat: np.ndarray, runs: np.ndarray, value: int) -> None:
    """Write ``value`` into the foreground runs of one mask's run lengths."""
    ends = np.cumsum(runs)
    lengths = runs[1::2]
    starts = ends[0::2][: lengths.size]
    total = int(lengths.sum())
    if total == 0:
        return
    if total > _SLICE_RUN_LENGTH * lengths.size:
        for s, n in zip(starts.tolist(), lengths.tolist()):
            flat[s : s + n] = value
    else:
        before = np.cumsum(lengths) - lengths
        idx = np.arange(total, dtype=np.int64) + np.repeat(starts - before, lengths)
        flat[idx] = value


def label_map_from_rles(rles: Sequence[dict], shape: tuple[int, int], order: Sequence[int] | None = None) -> np.ndarray:
    """(H, W) map of ``1 + index`` of the topmost mask at each pixel, 0 where none.

    ``order`` lists mask indices bottom to top (default: list order); masks left out are
    not painted.
    """
    h, w = shape
    order = range(len(rles)) if order is None else order
    order = [int(k) for k in order]
    flat = np.zeros(h * w, _label_dtype(len(rles)))  # column-major: RLE pixel order
    if order:
        for k in order:
            if rle_utils.size_of(rles[k]) != (h, w):
                raise ValueError(f"mask {k} is {rle_utils.size_of(rles[k])} but the image is {(h, w)}")
        values, offsets = rle_utils.run_lengths_many([rles[k]["counts"] for k in order])
        owner = np.repeat(np.arange(len(order)), np.diff(offsets))
        totals = np.bincount(owner, weights=values, minlength=len(order))
        bad = np.flatnonzero((totals != h * w) | (np.bincount(owner, weights=values < 0, minlength=len(order)) > 0))
        if bad.size:
            raise ValueError(f"mask {order[int(bad[0])]}: RLE counts do not cover the {h}x{w} image")
        for j, k in enumerate(order):
            _paint_runs(flat, values[offsets[j] : offsets[j + 1]], k + 1)
    return _transpose(flat.reshape(w, h))


def _transpose(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        return cv2.transpose(a)
    return np.ascontiguousarray(a.T)


def label_map_from_dense(masks: np.ndarray, order: Sequence[int] | None = None) -> np.ndarray:
    """The same label map from an (N, H, W) bool array, painting each mask's box only."""
    masks = np.asarray(masks)
    n, h, w = masks.shape
    out = np.zeros((h, w), _label_dtype(n))
    for k in range(n) if order is None else [int(k) for k in order]:
        m = masks[k]
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        sub = m[rows[0] : rows[-1] + 1]
        cols = np.flatnonzero(sub.any(axis=0))
        np.copyto(
            out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1],
            k + 1,
            where=sub[:, cols[0] : cols[-1] + 1].astype(bool, copy=False),
        )
    return out


class LabelMapCache:
    """A few recent label maps, keyed by the masks' RLE strings in paint order.

    Keyed by content, so it is right however the masks were edited; the key holds the
    RLE strings (shared with the document, not copied). Bounded in bytes.
    """

    def __init__(self, max_bytes: int = 128 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, rles: Sequence[dict], shape: tuple[int, int], order: Sequence[int]) -> np.ndarray:
        counts = [rles[k]["counts"] for k in order]
        key = (tuple(shape), tuple(order), tuple(c if isinstance(c, bytes) else str(c) for c in counts))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
        labels = label_map_from_rles(rles, shape, order)
        labels.flags.writeable = False
        with self._lock:
            self.misses += 1
            self._items[key] = labels
            while len(self._items) > 1 and self.nbytes > self.max_bytes:
                self._items.popitem(last=False)
        return labels

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# -- compositing ----------------------------------------------------------------------------
def _colors(colors, n: int) -> np.ndarray:
    if colors is None:
        return palette(n)
    c = np.asarray(colors, dtype=np.float64)
    if c.ndim == 1 and c.shape[0] == 3:
        c = np.tile(c, (n, 1))
    if c.shape != (n, 3):
        raise ValueError(f"colors must be (N, 3) with N = {n} masks, got shape {c.shape}")
    if c.size and c.max() <= 1.0 and np.issubdtype(np.asarray(colors).dtype, np.floating):
        c = c * 255  # floats in [0, 1]
    return np.clip(np.round(c), 0, 255).astype(np.uint8)


def _index_set(values, n: int, name: str) -> np.ndarray:
    """Bool (n,) from a collection of mask indices."""
    out = np.zeros(n, bool)
    idx = np.asarray(list(values), dtype=np.int64)
    if idx.size:
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"{name} has an index outside 0..{n - 1}")
        out[idx] = True
    return out


def _boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels inside a mask within ``width`` pixels of a different label (4-neighbourhood
    for width 1)."""
    if width <= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    else:
        kernel = np.ones((2 * width - 1, 2 * width - 1), np.uint8)
    lab = labels if labels.dtype == np.uint16 else labels.astype(np.float32)  # exact below 2**24
    border = cv2.BORDER_REPLICATE
    edge = cv2.dilate(lab, kernel, borderType=border) != lab
    edge |= cv2.erode(lab, kernel, borderType=border) != lab
    edge &= labels != 0
    return edge


def overlay(  # noqa: PLR0913  (drawing options, all keyword-able with defaults)
    image: np.ndarray,
    masks,
    alpha: float = 0.5,
    colors=None,
    outlines: bool = False,
    selected: Iterable[int] = (),
    hidden: Iterable[int] = (),
    rejected: Iterable[int] = (),
    *,
    order: Sequence[int] | None = None,
    dim: float = 0.35,
    outline_width: int = 1,
    highlight=HIGHLIGHT,
    cache: LabelMapCache | None = None,
) -> np.ndarray:
    """``image`` with ``masks`` drawn over it, as a new (H, W, 3) uint8 RGB array.

    ``masks``: a list of RLE dicts or an (N, H, W) bool array; later masks are on top
    (or give ``order``, bottom first). ``colors``: (N, 3) 0-255 (default: ``palette``).
    ``selected`` / ``hidden`` / ``rejected``: mask indices. Selected masks are drawn on top,
    more opaque, with a ``highlight`` outline; rejected masks are drawn beneath the rest at
    ``alpha * dim``, grayed (``dim=0`` leaves them out). Hidden masks are not drawn; a hidden
    mask that is also selected gets a thin dashed ``highlight`` outline and nothing else.
    ``outlines`` draws every mask's visible edge in its own color.
    """
    image = as_rgb_array(image)
    h, w = image.shape[:2]
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= dim <= 1.0:
        raise ValueError("alpha and dim must be between 0 and 1")
    masks, dense = _checked_masks(masks, (h, w))
    n = len(masks)
    if n == 0:
        return image.copy()
    hid = _index_set(hidden, n, "hidden")
    ghosts = np.flatnonzero(hid & _index_set(selected, n, "selected")).tolist()
    sel = _index_set(selected, n, "selected") & ~hid
    gray = _index_set(rejected, n, "rejected")
    dimmed = gray & ~sel
    base = [k for k in (range(n) if order is None else [int(k) for k in order]) if not hid[k]]
    # rejected beneath, then the rest, selected on top
    paint = (
        [k for k in base if dimmed[k]] + [k for k in base if not dimmed[k] and not sel[k]] + [k for k in base if sel[k]]
    )
    if dense:
        labels = label_map_from_dense(masks, paint)
    elif cache is not None:
        labels = cache.get(masks, (h, w), paint)
    else:
        labels = label_map_from_rles(masks, (h, w), paint)

    # per-label lookups; label 0 (no mask) gets alpha 0
    rgb = _colors(colors, n)
    if gray.any():
        rgb[gray] = (rgb[gray].astype(np.uint16) + np.array(REJECTED_GRAY, np.uint16)) // 2
    alphas = np.full(n, float(alpha))
    alphas[sel] = alpha + (1.0 - alpha) * 0.4
    alphas[dimmed] = alpha * dim
    label_alpha = np.concatenate(([0.0], alphas))
    if label_alpha.max() == 0.0 or not paint:
        return _dashed_outlines(image.copy(), masks, ghosts, outline_width, highlight)
    out4, color32 = _blend(image, labels, rgb, label_alpha)
    _draw_edges(out4.view(np.uint32)[..., 0], labels, color32, sel, outlines, outline_width, highlight)
    return _dashed_outlines(cv2.cvtColor(out4, cv2.COLOR_RGBA2RGB), masks, ghosts, outline_width, highlight)


def _checked_masks(masks, size: tuple[int, int]):
    """``masks`` as an (N, H, W) bool array or a list of compressed RLEs, and whether dense."""
    h, w = size
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks must be (N, {h}, {w}), got shape {masks.shape}")
        return masks, True
    return [
        m if isinstance(m, dict) and isinstance(m.get("counts"), (bytes, str)) else rle_utils.normalize(m, (h, w))
        for m in masks
    ], False


def _blend(image: np.ndarray, labels: np.ndarray, rgb: np.ndarray, label_alpha: np.ndarray):
    """The image with each label's color blended in at its alpha (RGBA), and every pixel's
    mask color (RGBA packed in uint32; the photo's own where no mask)."""
    h, w = labels.shape
    lut = np.zeros((len(rgb) + 1, 4), np.uint8)
    lut[1:, :3] = rgb
    image4 = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    image32 = image4.view(np.uint32)[..., 0]
    color32 = np.take(lut.view(np.uint32)[:, 0], labels)
    empty = labels == 0
    # where no mask, the photo's own color, so that blending leaves those pixels as they are
    np.copyto(color32, image32, where=empty)
    color4 = color32.view(np.uint8).reshape(h, w, 4)
    # one cv2 blend per distinct alpha (normal, selected, dimmed: a few at most), the one
    # most masks use over the whole image, the others copied in where their masks are
    levels, group = np.unique(label_alpha, return_inverse=True)
    mask_count = np.bincount(group[1:], minlength=len(levels))
    first = int(np.argmax(np.where(levels > 0.0, mask_count, -1)))
    out4 = cv2.addWeighted(image4, 1.0 - float(levels[first]), color4, float(levels[first]), 0.0)
    out32 = out4.view(np.uint32)[..., 0]
    rest = [g for g in range(len(levels)) if g != first and mask_count[g] != 0]
    if rest:
        pixel_group = np.take(group.astype(np.uint8), labels)
        for g in rest:
            a = float(levels[g])
            blended = image4 if a == 0.0 else cv2.addWeighted(image4, 1.0 - a, color4, a, 0.0)
            np.copyto(out32, blended.view(np.uint32)[..., 0], where=pixel_group == g)
    np.copyto(out32, image32, where=empty)  # exact, whatever float rounding did
    return out4, color32


def _draw_edges(
    out32: np.ndarray, labels: np.ndarray, color32: np.ndarray, sel: np.ndarray, outlines: bool, width: int, highlight
) -> None:
    """Every mask's visible edge in its own color (``outlines``), and the selected masks'
    edges in the highlight color, into ``out32`` (RGBA packed in uint32)."""
    if not (outlines or sel.any()):
        return
    edge = _boundary(labels, width)
    if outlines:
        np.copyto(out32, color32, where=edge)
    if sel.any():
        hl = np.zeros(4, np.uint8)
        hl[:3] = np.asarray(highlight, np.uint8)
        sel_edge = _boundary(labels, max(2, width)) & np.take(np.concatenate(([False], sel)), labels)
        out32[sel_edge] = hl.view(np.uint32)[0]


def _dashed_outlines(out: np.ndarray, masks, ks: list[int], width: int, color) -> np.ndarray:
    """Draw a thin dashed edge of each mask ``ks`` (hidden but selected) into ``out``."""
    if not ks:
        return out
    for k in ks:
        m = masks[k] if isinstance(masks, np.ndarray) else rle_utils.decode(masks[k])
        ys, xs = np.nonzero(_boundary(np.ascontiguousarray(m, dtype=np.uint8), max(1, width)))
        on = ((xs + ys) // DASH) % 2 == 0
        out[ys[on], xs[on]] = np.asarray(color, np.uint8)
    return out


def render_document(
    image: np.ndarray,
    doc,
    *,
    alpha: float = 0.5,
    outlines: bool = False,
    cache: LabelMapCache | None = None,
    show_hidden: bool = True,
    **kwargs,
) -> np.ndarray:
    """Overlay of an ``AnnotationDocument``: colors by annotation id, its selection
    highlighted, rejected masks dimmed, hidden ones not drawn (a selected hidden mask gets a
    dashed outline; ``show_hidden=False`` leaves out even that)."""
    anns = doc.annotations
    sel = doc.selection
    hidden = [k for k, a in enumerate(anns) if not a.visible]
    if not show_hidden:
        keep = [k for k, a in enumerate(anns) if a.visible]
        anns = [anns[k] for k in keep]
        hidden = []
    return overlay(
        image,
        [a.rle for a in anns],
        alpha=alpha,
        colors=palette(a.id for a in anns),
        outlines=outlines,
        selected=[k for k, a in enumerate(anns) if a.id in sel],
        hidden=hidden,
        rejected=[k for k, a in enumerate(anns) if a.review == "rejected"],
        cache=cache,
        **kwargs,
    )


class Renderer:
    """Renders documents, re-using label maps across alpha/outline/selection changes."""

    def __init__(self, max_cache_bytes: int = 128 * 2**20):
        self.cache = LabelMapCache(max_cache_bytes)

    def render(self, image: np.ndarray, doc, **kwargs) -> np.ndarray:
        return render_document(image, doc, cache=self.cache, **kwargs)
