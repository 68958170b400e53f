"""COCO run-length encoded masks: the one place that knows the RLE format.

A mask at rest is ``{"size": [h, w], "counts": bytes}``: pycocotools' compressed RLE,
runs over the pixels in column-major order (pixel index ``x * h + y``), alternating
background / foreground and starting with background. Everything that needs pixels goes
through pycocotools; the only hand-written piece is reading the compressed string back
into run lengths (pycocotools has no Python call for it), vectorised in numpy, which the
hit test, the renderer and input validation use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools' area() overflows for 256 or more RLEs in one call with numpy 2.
_AREA_CHUNK = 255


class RleError(ValueError):
    """An RLE is malformed; the message says how."""


def encode(mask: np.ndarray) -> dict:
    """A dense (H, W) mask as compressed RLE with ``bytes`` counts."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RleError(f"a mask is a 2-D array, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"]}


def decode(rle: dict) -> np.ndarray:
    """The dense (H, W) bool mask of a compressed RLE."""
    return mask_utils.decode(_c(rle)).astype(bool, copy=False)


def _c(rle: dict) -> dict:
    """The dict pycocotools wants (counts as bytes)."""
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def size_of(rle: dict) -> tuple[int, int]:
    h, w = rle["size"]
    return int(h), int(w)


def from_counts(run_lengths, size: Sequence[int]) -> dict:
    """Compressed RLE from uncompressed run lengths (background first)."""
    h, w = int(size[0]), int(size[1])
    runs = np.asarray(run_lengths, dtype=np.int64).reshape(-1)
    check_runs(runs, h, w)
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": runs.astype(np.uint32)}, h, w)
    return {"size": [h, w], "counts": rle["counts"]}


def check_runs(runs: np.ndarray, h: int, w: int) -> None:
    if runs.size and runs.min() < 0:
        raise RleError("RLE counts contain a negative run length")
    total = int(runs.sum())
    if total != h * w:
        raise RleError(f"RLE counts sum to {total} pixels but the mask is {h}x{w} = {h * w}")


def normalize(obj, size: Sequence[int] | None = None, *, check: bool = True) -> dict:
    """Any mask a user may hand over, as a validated compressed RLE with ``bytes`` counts.

    Accepts a dense (H, W) array, a compressed RLE (counts ``bytes`` or ``str``) or an
    uncompressed RLE (counts a list or array of run lengths). ``size`` (h, w), when given,
    must match. ``check=False`` skips reading compressed strings back (for callers that
    check many at once with ``check_many``).
    """
    if isinstance(obj, dict):
        if "counts" not in obj or "size" not in obj:
            raise RleError("an RLE needs both 'size' and 'counts'")
        try:
            h, w = (int(v) for v in obj["size"])
        except (TypeError, ValueError):
            raise RleError(f"RLE size must be [height, width], got {obj['size']!r}") from None
        if h < 0 or w < 0:
            raise RleError(f"RLE size must be non-negative, got {[h, w]}")
        counts = obj["counts"]
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                raise RleError("compressed RLE counts must be ASCII") from None
        if isinstance(counts, (bytes, bytearray)):
            counts = bytes(counts)
            if check:
                check_runs(run_lengths(counts), h, w)
            rle = {"size": [h, w], "counts": counts}
        elif isinstance(counts, (list, tuple, np.ndarray)):
            try:
                runs = np.asarray(counts, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise RleError("uncompressed RLE counts must be a list of integers") from None
            if not np.isfinite(runs).all() or (runs != np.round(runs)).any():
                raise RleError("uncompressed RLE counts must be whole numbers")
            rle = from_counts(runs.astype(np.int64), (h, w))
        else:
            raise RleError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    else:
        arr = np.asarray(obj)
        if arr.ndim != 2:
            raise RleError(f"a mask is a 2-D array or an RLE dict, got shape {arr.shape}")
        rle = encode(arr != 0 if arr.dtype != bool else arr)
    if size is not None and tuple(rle["size"]) != (int(size[0]), int(size[1])):
        raise RleError(
            f"mask is {rle['size'][0]}x{rle['size'][1]} (h x w) but the image is {int(size[0])}x{int(size[1])}"
        )
    return rle


def check_many(rles: Sequence[dict]) -> None:
    """Validate many compressed RLEs in one pass; the error names the first bad one."""
    if not rles:
        return
    try:
        values, offsets = run_lengths_many([r["counts"] for r in rles])
    except RleError:
        for k, r in enumerate(rles):  # find which one
            try:
                run_lengths(r["counts"])
            except RleError as e:
                raise RleError(f"mask {k}: {e}") from None
        raise
    sizes = np.array([size_of(r) for r in rles], dtype=np.int64).reshape(-1, 2)
    owner = np.repeat(np.arange(len(rles)), np.diff(offsets))
    totals = np.bincount(owner, weights=values, minlength=len(rles))
    negative = np.bincount(owner, weights=values < 0, minlength=len(rles)) > 0
    bad = np.flatnonzero(negative | (totals != sizes[:, 0] * sizes[:, 1]))
    if bad.size:
        k = int(bad[0])
        try:
            check_runs(values[offsets[k] : offsets[k + 1]], *size_of(rles[k]))
        except RleError as e:
            raise RleError(f"mask {k}: {e}") from None


def to_json(rle: dict) -> dict:
    """The RLE with ``str`` counts, as COCO JSON files carry it."""
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


# -- run lengths from the compressed string ------------------------------------------------
def run_lengths(counts: bytes | str) -> np.ndarray:
    """Run lengths (int64, background first) of one compressed counts string."""
    values, offsets = run_lengths_many([counts])
    return values[offsets[0] : offsets[1]]


def run_lengths_many(all_counts: Iterable[bytes | str]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many compressed strings in one vectorised pass.

    Returns ``(values, offsets)``: the runs of string ``i`` are ``values[offsets[i]:offsets[i+1]]``.
    The format (pycocotools' rleToString): each number is written 5 bits per character,
    low bits first, ``0x20`` marks "more characters follow", ``0x10`` in the last character is
    the sign, characters are offset by 48; from the fourth number on, each is stored as the
    difference to the number two places before it.
    """
    parts = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in all_counts]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    chars = np.frombuffer(b"".join(parts), dtype=np.uint8).astype(np.int64) - 48
    if chars.size and (chars.min() < 0 or chars.max() > 63):
        bad = int(np.flatnonzero((chars < 0) | (chars > 63))[0])
        owner = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
        raise RleError(
            f"compressed RLE counts contain a character outside '0'..'o' (string {owner})"
            if len(parts) > 1
            else "compressed RLE counts contain a character outside '0'..'o'"
        )
    more = (chars & 0x20) != 0
    ends = np.flatnonzero(~more)  # last character of each number
    string_ends = np.cumsum(lengths)
    # every string must end on a number's last character
    if lengths.size and np.any(lengths > 0):
        last_chars = string_ends[lengths > 0] - 1
        if more[last_chars].any():
            raise RleError("compressed RLE counts end in the middle of a number")
    starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else ends
    if ends.size and np.any(ends - starts >= 7):  # run lengths are 32-bit: at most 7 characters
        raise RleError("compressed RLE counts contain a number that is too long")
    pos = np.arange(chars.size, dtype=np.int64)
    shift = 5 * (pos - np.repeat(starts, ends - starts + 1)) if ends.size else pos
    values = np.add.reduceat((chars & 0x1F) << shift, starts) if ends.size else np.zeros(0, np.int64)
    negative = (chars[ends] & 0x10) != 0 if ends.size else np.zeros(0, bool)
    values = values - (negative.astype(np.int64) << (5 * (ends - starts + 1)))
    # which string each number belongs to, and its index inside that string
    per_string = np.searchsorted(ends, string_ends - 1, side="right")
    offsets = np.concatenate(([0], per_string)).astype(np.int64)
    counts_per = np.diff(offsets)
    rel = np.arange(values.size, dtype=np.int64) - np.repeat(offsets[:-1], counts_per)
    # undo the delta coding: values at index >= 3 add the (decoded) value two places back,
    # so the numbers at odd indices, and at even indices >= 2, are each a running sum.
    # A running sum restarts at index 0, 1 and 2 of every string.
    restart = rel <= 2
    for parity in (0, 1):
        sel = np.flatnonzero((np.arange(values.size) & 1) == parity)
        if sel.size == 0:
            continue
        v = values[sel]
        r = restart[sel]
        cs = np.cumsum(v)
        seg = np.cumsum(r) - 1
        before = (cs - v)[r]
        values[sel] = cs - before[seg]
    return values, offsets


# -- whole-mask helpers over pycocotools ---------------------------------------------------
def areas(rles: Sequence[dict]) -> np.ndarray:
    out = [mask_utils.area([_c(r) for r in rles[i : i + _AREA_CHUNK]]) for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def bboxes(rles: Sequence[dict]) -> np.ndarray:
    """(N, 4) float64 boxes x, y, w, h in pixels (zeros for empty masks)."""
    if not rles:
        return np.zeros((0, 4))
    return np.asarray(mask_utils.toBbox([_c(r) for r in rles]), dtype=np.float64).reshape(-1, 4)


def union(rles: Sequence[dict]) -> dict:
    if not rles:
        raise RleError("union of no masks")
    merged = mask_utils.merge([_c(r) for r in rles], intersect=0)
    return {"size": list(size_of(rles[0])), "counts": merged["counts"]}


def intersection(rles: Sequence[dict]) -> dict:
    if not rles:
        raise RleError("intersection of no masks")
    merged = mask_utils.merge([_c(r) for r in rles], intersect=1)
    return {"size": list(size_of(rles[0])), "counts": merged["counts"]}


def complement(rle: dict) -> dict:
    """Every pixel not in the mask: the same runs with background and foreground swapped."""
    runs = run_lengths(rle["counts"])
    if runs.size and runs[0] == 0:
        runs = runs[1:]
    else:
        runs = np.concatenate(([0], runs))
    return from_counts(runs, size_of(rle))


def difference(a: dict, b: dict) -> dict:
    """Pixels of ``a`` that are not in ``b``."""
    if size_of(a) != size_of(b):
        raise RleError(f"masks differ in size: {size_of(a)} and {size_of(b)}")
    return intersection([a, complement(b)])


def iou_matrix(dt: Sequence[dict], gt: Sequence[dict], crowd: Sequence[bool] | None = None) -> np.ndarray:
    """(len(dt), len(gt)) IoU; where ``crowd[j]`` the denominator is dt's area instead
    (so ``iou_matrix(a, b, crowd=[1]*len(b))[i, j] = |a_i ∩ b_j| / |a_i|``)."""
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)))
    crowd = [0] * len(gt) if crowd is None else [int(bool(c)) for c in crowd]
    m = mask_utils.iou([_c(r) for r in dt], [_c(r) for r in gt], crowd)
    return np.asarray(m, dtype=np.float64).reshape(len(dt), len(gt))


def foreground_runs(rle: dict) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the foreground runs, as column-major flat pixel indices."""
    runs = run_lengths(rle["counts"])
    ends = np.cumsum(runs)
    return (ends[0::2][: runs[1::2].size], runs[1::2])


# -- crops, polygons and label maps ----------------------------------------------------------
def decode_bbox(rle: dict, runs: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """``(crop, x0, y0)``: the (bh, bw) bool pixels of the mask's bounding box and where the
    box starts; touches only the box's pixels, never the whole image. An empty mask gives a
    (0, 0) crop at (0, 0). ``runs``: the mask's run lengths, when already decoded (many
    masks decode faster together: ``run_lengths_many``)."""
    h, w = size_of(rle)
    if runs is None:
        runs = run_lengths(rle["counts"])
    ends_all = np.cumsum(runs)
    starts, lengths = ends_all[0::2][: runs[1::2].size], runs[1::2]
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if starts.size == 0:
        return np.zeros((0, 0), bool), 0, 0
    ends = starts + lengths  # exclusive
    cols0, cols1 = starts // h, (ends - 1) // h
    x0, x1 = int(cols0.min()), int(cols1.max())
    if np.any(cols1 > cols0):  # a run wraps into the next column: the mask spans every row
        y0, y1 = 0, h - 1
    else:
        rows0, rows1 = starts % h, (ends - 1) % h
        y0, y1 = int(rows0.min()), int(rows1.max())
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    # a pixel (col, row) of the box is (col - x0) * bh + (row - y0) in the box's column-major
    # order; every run stays contiguous there (runs only wrap columns when bh == h)
    cstart = (starts // h - x0) * bh + (starts % h - y0)
    cend = cstart + lengths
    gaps = np.empty(2 * cstart.size + 1, np.int64)
    gaps[0] = cstart[0]
    gaps[1::2] = lengths
    gaps[2:-1:2] = cstart[1:] - cend[:-1]
    gaps[-1] = bh * bw - cend[-1]
    values = np.zeros(gaps.size, bool)
    values[1::2] = True
    flat = np.repeat(values, gaps)
    return flat.reshape(bw, bh).T, x0, y0


def encode_bbox(crop: np.ndarray, x0: int, y0: int, size: Sequence[int]) -> dict:
    """The RLE of an (H, W) = ``size`` mask that is ``crop`` at (x0, y0) and empty elsewhere:
    the inverse of ``decode_bbox``, touching only the crop's pixels."""
    h, w = int(size[0]), int(size[1])
    crop = np.asarray(crop, dtype=bool)
    bh, bw = crop.shape
    if x0 < 0 or y0 < 0 or x0 + bw > w or y0 + bh > h:
        raise RleError(f"a {bh}x{bw} crop at ({x0}, {y0}) does not fit a {h}x{w} mask")
    # a background row above and below each column, so no run wraps into the next column
    padded = np.zeros((bh + 2, bw), np.int8)
    padded[1:-1] = crop
    flat = padded.T.reshape(-1)
    edges = np.flatnonzero(np.diff(flat))  # a run starts after a rise, ends after a fall
    starts, ends = edges[0::2] + 1, edges[1::2] + 1
    col, row = starts // (bh + 2), starts % (bh + 2) - 1
    gstart = (x0 + col) * h + y0 + row
    gend = gstart + (ends - starts)
    if gstart.size > 1:  # runs that meet across a column boundary (a full-height crop) are one
        apart = gstart[1:] > gend[:-1]
        gstart, gend = gstart[np.concatenate(([True], apart))], gend[np.concatenate((apart, [True]))]
    starts, lengths = gstart, gend - gstart
    runs = np.empty(2 * starts.size + 1, np.int64)
    if starts.size:
        runs[0] = starts[0]
        runs[1::2] = lengths
        runs[2:-1:2] = starts[1:] - gend[:-1]
        runs[-1] = h * w - gend[-1]
        if runs[-1] == 0:  # pycocotools writes no empty last run
            runs = runs[:-1]
    else:
        runs[0] = h * w
    return from_counts(runs, (h, w))


def from_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """The union of polygons (flat x, y lists in pixels) rasterised as COCO does: pixel
    centres inside by the even-odd rule, so a ring bridged into itself keeps its holes."""
    polys = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in polygons]
    if not polys:
        return from_counts([height * width], (height, width))
    rles = mask_utils.frPyObjects(polys, int(height), int(width))
    merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    return {"size": [int(height), int(width)], "counts": merged["counts"]}


def from_label_map(labels: np.ndarray) -> dict[int, dict]:
    """``{value: RLE}`` for every non-zero value of an (H, W) label map, in one pass over the
    pixels (not one per value)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise RleError(f"a label map is a 2-D array, got shape {labels.shape}")
    h, w = labels.shape
    flat = labels.T.reshape(-1)  # column-major: RLE pixel order
    n = flat.size
    if n == 0:
        return {}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    values = flat[starts]
    fg = values != 0
    starts, ends, values = starts[fg], ends[fg], values[fg]
    order = np.argsort(values, kind="stable")  # runs grouped by value, in pixel order
    starts, ends, values = starts[order], ends[order], values[order]
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    out = {}
    for s, e in zip(np.split(starts, cut), np.split(ends, cut), strict=True):
        if s.size == 0:
            continue
        runs = np.empty(2 * s.size + 1, np.int64)
        runs[0] = s[0]
        runs[1::2] = e - s
        runs[2:-1:2] = s[1:] - e[:-1]
        runs[-1] = n - e[-1]
        if runs[-1] == 0:  # canonical, as pycocotools writes it: no empty last run
            runs = runs[:-1]
        out[int(flat[s[0]])] = from_counts(runs, (h, w))
    return out


def iou_pairs(a: Sequence[dict], b: Sequence[dict]) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for each i; two empty masks count as identical (1.0)."""
    if len(a) != len(b):
        raise RleError(f"{len(a)} masks against {len(b)}")
    out = np.empty(len(a), np.float64)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if size_of(x) != size_of(y):
            raise RleError(f"mask {i}: sizes differ: {size_of(x)} and {size_of(y)}")
        if _c(x)["counts"] == _c(y)["counts"]:
            out[i] = 1.0  # canonical compressed strings: equal bytes, equal pixels
            continue
        iou = float(np.asarray(mask_utils.iou([_c(x)], [_c(y)], [0])).reshape(-1)[0])
        if iou == 0.0 and not areas([x, y]).any():
            iou = 1.0  # both empty, written differently
        out[i] = iou
    return out
