"""What the browser canvas draws, as plain data: the image, mask layers, a table, the prompt;
and the actions it sends back, checked. No Gradio, no session: ``canvas_link`` ties these to
a workbench session.

The canvas draws everything itself, so view changes (zoom, opacity, hide, outlines, hover)
need no server. The server sends a *frame*: a JSON-able dict with only what changed since
the frame the browser already has (``Sent`` records that, per browser canvas).

Masks travel as *label layers*: PNG images at the view scale whose pixels hold the id of the
mask there (``id = r + 256 g + 65536 b``, 0 = none). Overlapping masks cannot share a pixel
of one map, so they are stacked: each mask goes into the layer just above the highest layer
already under its pixels. A mask is thus whole in its own layer and above every mask it
overlaps, so drawing layers bottom first keeps the z-order, hiding a mask in the browser
reveals the mask beneath, and a new mask on top moves no other. After an edit only the
rectangle around the masks that changed (or moved to another layer) is sent again, per layer.

The image itself is sent once per image, downscaled to ``VIEW_MAX_SIDE``; ``crop_jpeg``
serves full-resolution crops of it when the browser zooms past that scale.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from annotator.annotations import render
from annotator.annotations import rle as rle_utils
from annotator.annotations.classes import ClassList, rgb
from annotator.annotations.markers import display_scale, display_size

VIEW_MAX_SIDE = 2048
JPEG_QUALITY = 88
# label maps: zlib's fastest level and no PNG row filter (the filter search took 3/4 of the
# encoding time; flat ids compress as well without it)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
PROMPT_COLOR = "#1e90ff"
ACTION_TYPES = (
    "point",
    "box",
    "remove_point",
    "clear_prompt",
    "accept",
    "select",
    "paint",
    "candidate",
    "mode",
    "view",
    "undo",
    "redo",
    "delete",
    "scale",
    "resync",
)
UNCHANGED = object()  # a frame's prompt that the browser has already
POINT_MODES = ("positive", "negative", "box")  # what a plain click on the image adds
MODES = ("positive", "negative", "box", "select")
VIEW_KEYS = ("alpha", "outlines", "only_selected", "coverage")


def _data_url(kind: str, encoded: np.ndarray) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def tinted_png_url(mask: np.ndarray, color: str) -> str:
    """A PNG data URL of a 0/1 (H, W) mask: ``color`` where set, transparent elsewhere.
    Paletted with one bit a pixel (index 0 transparent), so the browser draws it as it comes,
    with no pixel loop of its own. Written here rather than by Pillow, which took 3-4x as
    long for the same bytes (its per-row packing and filtering): it is on every click's path."""
    h, w = mask.shape
    rows = np.empty((h, (w + 7) // 8 + 1), np.uint8)
    rows[:, 0] = 0  # each row's filter: none
    rows[:, 1:] = np.packbits(mask != 0, axis=1)
    r, g, b = rgb(color)
    png = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 3, 0, 0, 0)),  # 1 bit, palette
            _png_chunk(b"PLTE", bytes((0, 0, 0, r, g, b))),
            _png_chunk(b"tRNS", b"\x00"),  # index 0 transparent
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
            _png_chunk(b"IEND", b""),
        )
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def jpeg_url(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    # 4:4:4: no chroma subsampling, so colour edges (what people trace) stay sharp
    ok, buf = cv2.imencode(
        ".jpg",
        np.ascontiguousarray(rgb[..., ::-1]),
        [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return _data_url("jpeg", buf)


def decode_data_url(url: str) -> np.ndarray:
    """The pixels of a PNG/JPEG data URL (RGB, or 2-D for grey), for tests and tools."""
    raw = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    return img if img.ndim == 2 else np.ascontiguousarray(img[..., 2::-1])


# -- ids as colours ----------------------------------------------------------------------------
def ids_png_url(ids: np.ndarray) -> str:
    """A PNG data URL of an (H, W) id map as colours, ``id = r + 256 g + 65536 b`` (written
    in OpenCV's BGR order directly: no channel-swapped copy)."""
    ids = ids.astype(np.uint32, copy=False)
    bgr = np.empty((*ids.shape, 3), np.uint8)
    bgr[..., 0] = (ids >> 16) & 255
    bgr[..., 1] = (ids >> 8) & 255
    bgr[..., 2] = ids & 255
    ok, buf = cv2.imencode(".png", bgr, PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return _data_url("png", buf)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


# -- image ---------------------------------------------------------------------------------------
def view_size(size_hw: tuple[int, int], max_side: int = VIEW_MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the view-scale copies (image base and label layers)."""
    return display_size(size_hw, display_scale(size_hw, max_side))


def image_message(image: np.ndarray, key: str, max_side: int = VIEW_MAX_SIDE) -> dict:
    """The image as the browser gets it once: a JPEG at the view scale and its true size."""
    h, w = image.shape[:2]
    vh, vw = view_size((h, w), max_side)
    base = image if (vh, vw) == (h, w) else cv2.resize(image, (vw, vh), interpolation=cv2.INTER_AREA)
    return {"key": key, "width": w, "height": h, "view_width": vw, "view_height": vh, "src": jpeg_url(base)}


def crop_jpeg(
    image: np.ndarray, x0: float, y0: float, x1: float, y1: float, scale: float = 1.0, max_pixels: int = 4_000_000
) -> dict:
    """A JPEG of the image region [x0, x1) x [y0, y1) (image pixels, clipped), at ``scale``
    (<= 1; lowered further to keep the crop under ``max_pixels``), for zooming past the
    view scale. Returns the region actually cropped with the data URL."""
    h, w = image.shape[:2]
    xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    xb, yb = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if xb <= xa or yb <= ya:
        raise ValueError(f"crop [{x0}, {y0}, {x1}, {y1}] is outside the {w}x{h} image")
    scale = float(min(1.0, max(scale, 1e-3), np.sqrt(max_pixels / ((xb - xa) * (yb - ya)))))
    region = image[ya:yb, xa:xb]
    if scale < 1.0:
        size = (max(1, int((xb - xa) * scale)), max(1, int((yb - ya) * scale)))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    return {"x": xa, "y": ya, "w": xb - xa, "h": yb - ya, "src": jpeg_url(region)}


# -- label layers ---------------------------------------------------------------------------------
def _stack(anns: Sequence, size_hw: tuple[int, int]) -> tuple[list[np.ndarray], dict[int, int]]:
    """``stack_layers`` as flat column-major (RLE order) maps, and the layer of each mask id."""
    h, w = size_hw
    height = np.zeros(h * w, np.uint16)  # layers stacked so far under each pixel
    layers: list[np.ndarray] = []
    placed: dict[int, int] = {}
    if not anns:
        return layers, placed
    values, offsets = rle_utils.run_lengths_many([a.counts for a in anns])  # one pass for all
    for i, a in enumerate(anns):
        runs = values[offsets[i] : offsets[i + 1]]
        ends = np.cumsum(runs)
        lengths = runs[1::2]
        starts = ends[0::2][: lengths.size]
        total = int(lengths.sum())
        if total == 0:
            continue
        idx = np.arange(total, dtype=np.int64) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        k = int(height[idx].max())
        height[idx] = k + 1
        if k == len(layers):
            layers.append(np.zeros(h * w, np.uint32))
        layers[k][idx] = a.id
        placed[a.id] = k
    return layers, placed


def stack_layers(anns: Sequence, size_hw: tuple[int, int]) -> list[np.ndarray]:
    """Full-resolution label maps of ann ids, layer 0 at the bottom; every mask whole in one
    layer, and a mask above the masks it overlaps.

    ``anns``: annotations (``id``, ``counts``) in z-order, bottom first. Each mask goes one
    layer above the highest layer under any of its pixels, so adding a mask on top never
    moves the others.
    """
    h, w = size_hw
    return [np.ascontiguousarray(flat.reshape(w, h).T) for flat in _stack(anns, size_hw)[0]]


def _sample_rows_cols(size_hw, view_hw):
    (h, w), (vh, vw) = size_hw, view_hw
    rows = np.minimum(((np.arange(vh) + 0.5) * h / vh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(vw) + 0.5) * w / vw).astype(np.int64), w - 1)
    return rows, cols


def to_view(label_map: np.ndarray, view_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour sample of a full-resolution map at the view size (pixel centres)."""
    if label_map.shape == tuple(view_hw):
        return label_map
    rows, cols = _sample_rows_cols(label_map.shape, view_hw)
    return label_map[rows][:, cols]


def _view_rect(label_map: np.ndarray, view_hw: tuple[int, int], rect: tuple[int, int, int, int]) -> np.ndarray:
    """``to_view(label_map, view_hw)[y0:y1, x0:x1]``, sampling only that rectangle."""
    x0, y0, x1, y1 = rect
    if label_map.shape == tuple(view_hw):
        return np.ascontiguousarray(label_map[y0:y1, x0:x1])
    rows, cols = _sample_rows_cols(label_map.shape, view_hw)
    return label_map[rows[y0:y1]][:, cols[x0:x1]]


@dataclass
class Sent:
    """What one browser canvas holds, so the next frame sends only what changed."""

    image_key: str | None = None
    size: tuple[int, int] | None = None  # (h, w) of the image
    masks: dict = field(default_factory=dict)  # ann id -> (counts bytes, layer, bbox)
    n_layers: int = 0
    order: tuple = ()  # the mask ids of the layers sent, bottom first
    frame: int = 0  # number of the last frame sent
    last_action: int = 0  # sequence number of the last browser action applied
    view: tuple | None = None  # the view options the browser has (it reports its own)
    prompt_key: tuple | None = None  # what the prompt sent last was made from (None: not sent)
    preview_n: int = 0  # masks in the preview layer sent (segment everything still running)
    preview_ids: np.ndarray | None = field(
        default=None, compare=False, repr=False
    )  # that layer (view size), so a batch paints only its own masks


def _bbox_view(bbox, size_hw, view_hw) -> tuple[int, int, int, int]:
    """An image-pixel bbox (x, y, w, h) as view pixels [x0, x1) x [y0, y1), grown by 1."""
    (h, w), (vh, vw) = size_hw, view_hw
    x, y, bw, bh = bbox
    x0 = max(0, int(np.floor(x * vw / w)) - 1)
    y0 = max(0, int(np.floor(y * vh / h)) - 1)
    x1 = min(vw, int(np.ceil((x + bw) * vw / w)) + 1)
    y1 = min(vh, int(np.ceil((y + bh) * vh / h)) + 1)
    return x0, y0, x1, y1


def layers_message(anns: Sequence, size_hw: tuple[int, int], sent: Sent, max_side: int = VIEW_MAX_SIDE) -> dict | None:
    """Label layer patches for what changed since ``sent`` (updated in place); None when
    nothing did. A browser without the layers (new image) gets them whole."""
    view_hw = view_size(size_hw, max_side)
    full = sent.size != tuple(size_hw)
    order = tuple(a.id for a in anns)
    if (
        not full
        and order == sent.order
        and all(a.id in sent.masks and a.counts in (sent.masks[a.id][0],) for a in anns)
    ):
        return None  # the same masks in the same order: the layers are as the browser has them
    flat, placed = _stack(anns, size_hw)
    now = {a.id: (a.counts, placed[a.id], a.bbox) for a in anns if a.id in placed}
    before = {} if full else sent.masks  # a browser without layers starts from empty ones
    changed = [
        i
        for i in set(now) | set(before)
        if i not in now
        or i not in before
        or now[i][0] is not before[i][0]
        and now[i][0] != before[i][0]
        or now[i][1] != before[i][1]
    ]
    sent.order = order
    if not changed and not full:
        sent.masks, sent.n_layers = now, len(flat)
        return None
    # a layer changes only around the changed masks it holds or held; layers above the new
    # count are dropped by the browser, so they need no patch
    rects: dict[int, tuple[int, int, int, int]] = {}
    for i in changed:
        for m in (now.get(i), before.get(i)):
            if m is None or m[1] >= len(flat):
                continue
            b = _bbox_view(m[2], size_hw, view_hw)
            r = rects.get(m[1], b)
            rects[m[1]] = (min(r[0], b[0]), min(r[1], b[1]), max(r[2], b[2]), max(r[3], b[3]))
    h, w = size_hw
    patches = []
    for k in sorted(rects):
        x0, y0, x1, y1 = rect = rects[k]
        view = _view_rect(flat[k].reshape(w, h).T, view_hw, rect)
        patches.append({"layer": k, "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "src": ids_png_url(view)})
    sent.masks, sent.n_layers, sent.size = now, len(flat), tuple(size_hw)
    return {
        "view_width": view_hw[1],
        "view_height": view_hw[0],
        "count": len(flat),
        "reset": full,
        "patches": patches,
    }


def mask_message(
    mask: np.ndarray | None,
    size_hw: tuple[int, int] | None = None,
    max_side: int = VIEW_MAX_SIDE,
    color: str = PROMPT_COLOR,
) -> dict | None:
    """A single mask (the prompt's candidate) as a PNG of its bounding box, ``color`` where
    the mask is and transparent elsewhere; ``x, y, w, h`` are pixels of a frame ``fw`` x ``fh``
    laid over the whole image.
    ``mask`` is at the image's size ``size_hw`` (default: its own shape; sampled down to the
    view size), or smaller: upscaled straight to what the screen shows (``prompt_size``), it
    is sent at that size."""
    if mask is None or not mask.any():
        return None
    view_hw = view_size(size_hw or mask.shape, max_side)
    m = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)
    view = to_view(m, view_hw) if mask.shape[0] > view_hw[0] or mask.shape[1] > view_hw[1] else m
    frame_hw = view.shape
    if not view.any():  # thinner than a view pixel everywhere: keep one pixel of it
        y, x = np.argwhere(mask)[0]
        view = np.zeros(frame_hw, np.uint8)
        view[
            min(int(y * frame_hw[0] / mask.shape[0]), frame_hw[0] - 1),
            min(int(x * frame_hw[1] / mask.shape[1]), frame_hw[1] - 1),
        ] = 1
    ys, xs = np.nonzero(view.any(axis=1))[0], np.nonzero(view.any(axis=0))[0]
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    return {
        "x": int(x0),
        "y": int(y0),
        "w": int(x1 - x0),
        "h": int(y1 - y0),
        "fw": int(frame_hw[1]),
        "fh": int(frame_hw[0]),
        "src": tinted_png_url((view[y0:y1, x0:x1] != 0).view(np.uint8), color),
    }


def prompt_size(size_hw: tuple[int, int], scale: float | None, max_side: int = VIEW_MAX_SIDE) -> tuple[int, int]:
    """(h, w) to upscale the shown candidate to: what the screen shows of the image
    (``scale`` = device pixels per image pixel, as the browser reports it), at most the
    view size. A candidate comes from 256x256 logits, so at the screen's scale it looks the
    same as at full resolution, for a fraction of the upscaling, encoding and decoding."""
    vh, vw = view_size(size_hw, max_side)
    if scale is None:
        return vh, vw
    h, w = size_hw
    s = min(vh / h, float(scale))
    return min(vh, max(1, int(np.ceil(h * s)))), min(vw, max(1, int(np.ceil(w * s))))


# -- table, classes, legend -------------------------------------------------------------------------
def mask_color(ann, classes: ClassList | None) -> str:
    """A mask's colour: its class colour, else a stable colour of its id."""
    color = classes.color_of(ann.label) if classes is not None else None
    if color:
        return color
    r, g, b = render.palette([ann.id])[0]
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def table_message(
    anns: Iterable, selection: Iterable[int], classes: ClassList | None, cursor: int | None = None
) -> list[dict]:
    """One small row per mask (z-order, bottom first): what the browser needs to colour,
    hide, select and hover it (``cursor``: the mask under review, outlined like a selected one)."""
    sel = set(selection)
    out = []
    for a in anns:
        cls = classes.by_name(a.label) if classes is not None and a.label is not None else None
        out.append(
            {
                "id": a.id,
                "label": a.label,
                "class_id": cls.id if cls else None,
                "color": mask_color(a, classes),
                "visible": a.visible,
                "review": a.review,
                "selected": a.id in sel,
                "current": a.id == cursor,
                "bbox": [float(v) for v in a.bbox],
                "area": a.area,
            }
        )
    return out


def legend(anns: Iterable, classes: ClassList | None) -> list[dict]:
    """Every class with its mask count (classes with none included), then unlabelled masks."""
    counts: dict = {}
    for a in anns:
        counts[a.label] = counts.get(a.label, 0) + 1
    rows = []
    for c in classes or ():
        rows.append(
            {"id": c.id, "name": c.name, "color": c.color, "shortcut": c.shortcut, "count": counts.pop(c.name, 0)}
        )
    for label, n in sorted(counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
        rows.append(
            {
                "id": None,
                "name": label if label is not None else "(no class)",
                "color": None,
                "shortcut": None,
                "count": n,
            }
        )
    return rows


def prompt_message(
    points: Sequence,
    labels: Sequence[int],
    box,
    mask: np.ndarray | None,
    size_hw: tuple[int, int] | None = None,
    corner=None,
    max_side: int = VIEW_MAX_SIDE,
) -> dict:
    """The live prompt: points (x, y, positive 1 / negative 0), box, the first corner of a
    box being clicked, and the candidate mask (see ``mask_message`` for ``size_hw``)."""
    return {
        "points": [[float(x), float(y), int(lb)] for (x, y), lb in zip(points, labels, strict=True)],
        "box": None if box is None else [float(v) for v in box],
        "corner": None if corner is None else [float(v) for v in corner],
        "mask": mask_message(mask, size_hw, max_side),
        "color": PROMPT_COLOR,
    }


def forget(sent: Sent) -> None:
    """The browser has no image and no layers (a new image, a reload, a lost frame)."""
    sent.image_key, sent.size, sent.masks, sent.n_layers, sent.order = None, None, {}, 0, ()
    sent.prompt_key = None
    sent.preview_n = 0
    sent.preview_ids = None


# -- a frame -----------------------------------------------------------------------------------------
def preview_message(sent: Sent, preview: Sequence, size_hw: tuple[int, int], max_side: int = VIEW_MAX_SIDE) -> dict:
    """Masks still being found, flattened into one label layer (the topmost wins):
    provisional, so one PNG per update instead of a layer per overlap. ``preview``: (id, RLE)
    of every mask so far; the masks ``sent`` has already are not painted again, so a run's
    previews cost its new masks each, not all masks found so far."""
    view_hw = view_size(size_hw, max_side)
    start = sent.preview_n
    if sent.preview_ids is None or sent.preview_ids.shape != view_hw or start > len(preview):
        sent.preview_ids, start = np.zeros(view_hw, np.uint32), 0
    new = preview[start:]
    if new:
        labels = to_view(render.label_map_from_rles([r for _, r in new], size_hw), view_hw)
        ids = np.array([0, *(i for i, _ in new)], np.uint32)[labels]
        np.copyto(sent.preview_ids, ids, where=ids != 0)
    sent.preview_n = len(preview)
    return {"w": view_hw[1], "h": view_hw[0], "src": ids_png_url(sent.preview_ids)}


def frame(
    sent: Sent,
    *,
    image: np.ndarray | None,
    image_key: str | None,
    doc=None,
    classes: ClassList | None = None,
    prompt: Mapping | None = None,
    message: str = "",
    max_side: int = VIEW_MAX_SIDE,
    extra: Mapping | None = None,
    preview: Sequence = (),
) -> dict:
    """The next frame for a browser canvas that holds ``sent`` (updated in place).

    ``prompt``: ``prompt_message(...)`` output, None for no prompt, or ``UNCHANGED`` (the
    browser has it). ``preview``: (id, RLE) of masks segment everything has found so far.
    Sends the image when it changed, then the layer patches of what changed; the table and
    legend always (small).
    """
    sent.frame += 1
    out: dict[str, Any] = {"kind": "frame", "frame": sent.frame, "ack": sent.last_action, "message": message}
    if image is None:
        out["full"] = True
        if sent.image_key is not None:
            out["image"] = None
        forget(sent)
        if extra:
            out.update(extra)
        return out
    if image_key != sent.image_key:
        out["image"] = image_message(image, image_key, max_side)
        forget(sent)
        sent.image_key = image_key
    anns = list(doc.annotations) if doc is not None else []
    layers = layers_message(anns, image.shape[:2], sent, max_side)
    if layers is not None:
        out["layers"] = layers
    if len(preview) != sent.preview_n:
        if preview:
            out["preview"] = preview_message(sent, preview, image.shape[:2], max_side)
        else:
            out["preview"], sent.preview_n, sent.preview_ids = None, 0, None
    # a frame with everything in it: the browser applies it even after a lost frame
    out["full"] = "image" in out
    out["legend"] = legend(anns, classes)
    anns += getattr(doc, "preview_rows", [])  # coloured like masks, counted in no legend
    out["table"] = table_message(anns, doc.selection if doc is not None else (), classes, getattr(doc, "cursor", None))
    out["classes"] = classes.to_records() if classes is not None else []
    if prompt is not UNCHANGED:
        out["prompt"] = prompt or {"points": [], "box": None, "corner": None, "mask": None, "color": PROMPT_COLOR}
    if extra:
        out.update(extra)
    return out


# -- actions from the browser --------------------------------------------------------------------------
def _num(v, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(f):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return f


def _point(raw: Mapping) -> dict:
    mode = raw.get("mode", "positive" if raw.get("positive", True) else "negative")
    if mode not in POINT_MODES:
        raise ValueError(f"a point is one of {', '.join(POINT_MODES)}, got {mode!r}")
    return {"x": _num(raw.get("x"), "x"), "y": _num(raw.get("y"), "y"), "mode": mode}


def _mode(raw: Mapping) -> dict:
    if raw.get("mode") not in MODES:
        raise ValueError(f"a mode is one of {', '.join(MODES)}, got {raw.get('mode')!r}")
    return {"mode": raw["mode"]}


def _box(raw: Mapping) -> dict:
    box = raw.get("box")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError("a box is [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (_num(v, "box") for v in box)
    return {"box": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]}


def _paint(raw: Mapping) -> dict:
    strokes = raw.get("strokes")
    if not isinstance(strokes, list) or not strokes or not all(isinstance(s, Mapping) for s in strokes):
        raise ValueError("paint needs a list of strokes")
    return {
        "id": int(_num(raw.get("id"), "id")),
        "strokes": [
            {
                "points": [[_num(p[0], "x"), _num(p[1], "y")] for p in s.get("points") or []],
                "radius": _num(s.get("radius"), "radius"),
                "erase": bool(s.get("erase")),
            }
            for s in strokes
        ],
    }


def _class_id(raw: Mapping) -> dict:
    cid = raw.get("class_id")
    return {"class_id": None if cid is None else int(_num(cid, "class_id"))}


# what each action carries besides its type and number
_FIELDS = {
    "point": _point,
    "mode": _mode,
    "view": lambda raw: {"view": parse_view(raw.get("view"))},
    "box": _box,
    "remove_point": lambda raw: {"index": int(_num(raw.get("index"), "index"))},
    "select": lambda raw: {"x": _num(raw.get("x"), "x"), "y": _num(raw.get("y"), "y")},
    "paint": _paint,
    "candidate": lambda raw: {"position": int(_num(raw.get("position"), "position"))},
    "accept": _class_id,
}


def parse_action(raw: Mapping) -> dict:
    """One browser action, checked: ``{"seq": n, "type": ..., ...}`` with numbers as floats."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"a canvas action is an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind not in ACTION_TYPES:
        raise ValueError(f"unknown canvas action {kind!r}")
    out = {"seq": int(_num(raw.get("seq", 0), "seq")), "type": kind}
    if kind in _FIELDS:
        out.update(_FIELDS[kind](raw))
    return out


def parse_view(raw: Any) -> dict:
    """View options as the browser reports them: opacity 0-1 and three switches."""
    if not isinstance(raw, Mapping):
        raise ValueError("view options are an object")
    alpha = min(1.0, max(0.0, _num(raw.get("alpha", 0.5), "alpha")))
    return {"alpha": alpha, **{k: bool(raw.get(k)) for k in VIEW_KEYS[1:]}}


def reported_scale(message: Any) -> float | None:
    """The device pixels per image pixel a browser message says its canvas shows, or None."""
    if not isinstance(message, Mapping) or message.get("scale") is None:
        return None
    return min(64.0, max(0.01, _num(message["scale"], "scale")))


def reported_view(message: Any) -> dict | None:
    """The view options a browser message carries (every actions message does), or None."""
    if isinstance(message, Mapping) and message.get("view") is not None:
        return parse_view(message["view"])
    return None


def new_actions(message: Any, sent: Sent) -> list[dict]:
    """The actions of a browser message not applied yet (the browser re-sends the ones it has
    no acknowledgement for, so none is lost when events overtake each other)."""
    if not isinstance(message, Mapping) or message.get("kind") != "actions":
        return []
    have = message.get("have") or {}
    actions = [parse_action(a) for a in message.get("actions") or []]
    if (
        have.get("image") != sent.image_key
        or int(have.get("frame") or 0) == 0
        or any(a["type"] == "resync" for a in actions)
    ):
        # the browser lost what it had (reload, a frame that never came): the next frame
        # sends everything again
        forget(sent)
    return [a for a in sorted(actions, key=lambda a: a["seq"]) if a["seq"] > sent.last_action]
