"""Matplotlib figures for reviewing a set of masks, saved as PNG.

A grid of masks with their scores, views by COCO size range, the best and worst masks by
a quality score, and a containment heatmap (how much of each mask lies inside another).
Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never pyplot, so
nothing global changes and they work without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from annotator.annotations import rle as rle_utils
from annotator.annotations.render import overlay, palette
from annotator.formats.images import as_rgb_array
from annotator.formats.metrics import containment

# COCO's area ranges (pixels): small < 32^2 <= medium < 96^2 <= large
SIZE_RANGES = {"large": (96**2, float("inf")), "medium": (32**2, 96**2), "small": (0, 32**2)}


def _rles(masks) -> list[dict]:
    if isinstance(masks, np.ndarray):
        return [rle_utils.encode(m) for m in (masks if masks.ndim == 3 else masks[None])]
    return [rle_utils.normalize(m) for m in masks]


def _scores(scores, n: int) -> dict[str, np.ndarray]:
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        scores = {"score": scores}
    out = {}
    for name, values in scores.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size != n:
            raise ValueError(f"{name} has {v.size} values for {n} masks")
        out[name] = v
    return out


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path


def _crop_view(image: np.ndarray, rle: dict, color, margin: float = 0.15) -> np.ndarray:
    """The mask's box (plus a margin) with the mask drawn over it."""
    h, w = image.shape[:2]
    x, y, bw, bh = rle_utils.bboxes([rle])[0]
    mx, my = max(4, int(bw * margin)), max(4, int(bh * margin))
    x0, y0 = max(0, int(x) - mx), max(0, int(y) - my)
    x1, y1 = min(w, int(x + bw) + mx), min(h, int(y + bh) + my)
    mask = rle_utils.decode(rle)[y0:y1, x0:x1]
    return overlay(image[y0:y1, x0:x1], mask[None], alpha=0.55, colors=[color], outlines=True)


def _grid(image, rles, indices, scores, title, cols, fig_width=2.4):
    rows = max(1, -(-len(indices) // cols))
    fig = Figure(figsize=(fig_width * cols, fig_width * rows + 0.5), dpi=100, layout="constrained")
    fig.suptitle(title)
    colors = palette(len(rles))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        ax.imshow(_crop_view(image, rles[i], colors[i]))
        area = int(rle_utils.areas([rles[i]])[0])
        text = [f"#{i} area {area}"] + [f"{name} {v[i]:.3f}" for name, v in scores.items()]
        ax.set_title("\n".join(text), fontsize=8)
    return fig


def mask_grid(
    image: np.ndarray, masks, path, *, scores=None, cols: int = 6, max_masks: int = 36, title: str | None = None
) -> Path:
    """Each mask cropped to its box over the photo, titled with its index, area and scores
    (``scores``: one sequence, or ``{"predicted_iou": [...], "stability_score": [...]}``)."""
    image = as_rgb_array(image)
    rles = _rles(masks)
    sc = _scores(scores, len(rles))
    shown = list(range(min(len(rles), max_masks)))
    note = f" (first {len(shown)} of {len(rles)})" if len(shown) < len(rles) else ""
    return _save(_grid(image, rles, shown, sc, (title or f"{len(rles)} masks") + note, cols), path)


def size_views(image: np.ndarray, masks, path) -> Path:
    """Three overlays side by side: large, medium and small masks (COCO area ranges)."""
    image = as_rgb_array(image)
    rles = _rles(masks)
    areas = rle_utils.areas(rles)
    colors = palette(len(rles))
    h, w = image.shape[:2]
    fig = Figure(figsize=(15, 5 * h / w + 0.5), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (name, (lo, hi)) in zip(axes, SIZE_RANGES.items()):
        idx = [i for i, a in enumerate(areas) if lo <= a < hi]
        ax.imshow(
            overlay(image, [rles[i] for i in idx], colors=colors[idx] if idx else None, outlines=True) if idx else image
        )
        ax.set_title(f"{name}: {len(idx)} masks")
        ax.set_axis_off()
    return _save(fig, path)


def quality_views(image: np.ndarray, masks, scores, path, *, k: int = 6, name: str = "predicted_iou") -> Path:
    """The ``k`` best and ``k`` worst masks by ``scores``, in two rows."""
    image = as_rgb_array(image)
    rles = _rles(masks)
    s = _scores({name: scores}, len(rles))
    order = np.argsort(-s[name], kind="stable")
    k = min(k, len(rles))
    top, bottom = order[:k].tolist(), order[::-1][:k].tolist()
    fig = Figure(figsize=(2.4 * max(k, 1), 5.6), dpi=100, layout="constrained")
    fig.suptitle(f"top and bottom {k} of {len(rles)} masks by {name}")
    subfigs = fig.subfigures(2, 1)
    colors = palette(len(rles))
    for sub, idx, label in ((subfigs[0], top, "top"), (subfigs[1], bottom, "bottom")):
        sub.suptitle(label)
        axes = sub.subplots(1, max(k, 1), squeeze=False)[0]
        for ax in axes:
            ax.set_axis_off()
        for ax, i in zip(axes, idx):
            ax.imshow(_crop_view(image, rles[i], colors[i]))
            ax.set_title(f"#{i} {name} {s[name][i]:.3f}", fontsize=8)
    return _save(fig, path)


def containment_heatmap(masks, path, *, labels: Sequence[str] | None = None, max_masks: int = 100) -> Path:
    """Heatmap of |A_i ∩ A_j| / |A_i|: row i shows how much of mask i lies inside each mask j
    (nested and duplicate masks stand out)."""
    rles = _rles(masks)[:max_masks]
    c = containment(rles) if rles else np.zeros((0, 0))
    n = len(rles)
    size = min(12.0, 3 + 0.12 * n)
    fig = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(c, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="|A ∩ B| / |A|")
    ax.set_xlabel("B (mask j)")
    ax.set_ylabel("A (mask i)")
    ax.set_title(f"containment of {n} masks")
    if labels is not None and n <= 40:
        ax.set_xticks(range(n), labels[:n], rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels[:n], fontsize=7)
    return _save(fig, path)
