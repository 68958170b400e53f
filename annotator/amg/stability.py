"""Stability scores of SAM masks from their low-res logits, without upsampling them.

SAM's stability score is |{F > t + offset}| / |{F > t - offset}| over the full-resolution
logits ``F = Sam.postprocess_masks(L)`` (two bilinear resizes of the 256x256 map ``L``). Bilinear
resizing is separable and each output value is a convex combination of a few ``L`` values
(``F = A L B^T``, rows of A and B non-negative, summing to 1). So:

- every output pixel belongs to a low-res cell ``c`` (the first ``L`` row/column it reads); the
  values it reads lie in the 3x3 window ``[c, c + 2]^2`` of ``L`` (where float rounding of a
  sampling position moves a tap outside it, that tap's weight is ~1e-6);
- if the whole window is above ``t``, every output pixel of the cell is above ``t``; if none of
  it is, none is. Those cells are counted by size (output rows x columns per cell);
- only the remaining cells, along the mask's edges, are evaluated pixel by pixel, with the
  composite weights of the two resizes.

Where the mask's logits are far from the thresholds, as for most of a real mask, this costs a
few 256x256 operations instead of several full-resolution passes; masks the stability filter
drops are then never upsampled. If too many cells are uncertain (noise-like logits), the
caller falls back to the full-resolution computation. Counts match it to float rounding (a
pixel within ~1e-6 of a threshold may count differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

WINDOW = 3  # low-res values that reach a cell's output pixels: [c, c + 2] per axis


@dataclass(frozen=True)
class AxisMap:
    """How one axis of the low-res map reaches one axis of the output."""

    counts: torch.Tensor  # (span,) output pixels per low-res cell
    weights: torch.Tensor  # (span, R, WINDOW) composite weights of each cell's pixels on
    #                        [c, c+2]; NaN in the slots beyond a cell's pixel count
    span: int  # low-res cells that can reach the output: the last used cell + its window
    size: int  # output pixels along the axis
    all_used: bool  # every cell up to the last used one has output pixels


def axis_map(low: int, factor: int, inp: int, out: int, device=None) -> AxisMap:
    """Low-res axis (``low`` values) -> upsampled by ``factor`` -> first ``inp`` kept ->
    resized to ``out``: bilinear, align_corners=False, as ``Sam.postprocess_masks``."""
    o = np.arange(out)
    s2 = np.maximum((o + 0.5) * (inp / out) - 0.5, 0.0)
    k0 = np.floor(s2).astype(np.int64)
    lam2 = s2 - k0
    k1 = np.minimum(k0 + 1, inp - 1)

    def stage1(k):
        s1 = np.maximum((k + 0.5) / factor - 0.5, 0.0)
        i0 = np.floor(s1).astype(np.int64)
        return i0, np.minimum(i0 + 1, low - 1), s1 - i0

    a0, a1, lam_a = stage1(k0)
    b0, b1, lam_b = stage1(k1)
    cell = a0
    dense = np.zeros((out, WINDOW))
    for idx, weight in (
        (a0, (1 - lam2) * (1 - lam_a)),
        (a1, (1 - lam2) * lam_a),
        (b0, lam2 * (1 - lam_b)),
        (b1, lam2 * lam_b),
    ):
        np.add.at(dense, (o, idx - cell), weight)
    counts = np.bincount(cell, minlength=low)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = o - starts[cell]
    r = int(counts.max())
    # padding slots get NaN weights: their values compare False with any threshold
    weights = np.full((low, r, WINDOW), np.nan, np.float32)
    weights[cell, slot] = dense
    span = min(low, int(cell.max()) + WINDOW)
    return AxisMap(
        torch.as_tensor(counts[:span], dtype=torch.float32, device=device),
        torch.as_tensor(weights[:span], device=device),
        span,
        out,
        bool((counts[: int(cell.max()) + 1] > 0).all()),
    )


def _window_min_max(low: torch.Tensor):
    """Min and max of each cell's WINDOW x WINDOW neighbourhood [c, c+2]^2, (n, L, L); the
    window is cut at the map's edge. Separable, from shifted slices."""
    assert WINDOW == 3

    def sliding(x, op, fill):
        p = F.pad(x, (0, 2, 0, 2), value=fill)
        r = op(op(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
        return op(op(r[:, :-2], r[:, 1:-1]), r[:, 2:])

    return sliding(low, torch.minimum, float("inf")), sliding(low, torch.maximum, -float("inf"))


def _count_cells(low, maps, thresh, window, max_work):
    """``count_above`` by cells for maps already cut to the maps' spans."""
    amap, bmap = maps
    lo, hi = window
    above = lo > thresh
    # integers below 2**24 at every step, so float32 sums are exact
    certain = torch.einsum("nij,i,j->n", above.float(), amap.counts, bmap.counts)
    unsure = (hi > thresh) & ~above
    if not (amap.all_used and bmap.all_used):
        unsure &= (amap.counts > 0)[:, None] & (bmap.counts > 0)[None, :]
    cells = torch.nonzero(unsure)  # (E, 3): map, cell along dim 1, cell along dim 2
    ra, rb = amap.weights.shape[1], bmap.weights.shape[1]
    if max_work is not None and len(cells) * ra * rb > max_work:
        return None
    total = certain.round().to(torch.int64)
    if len(cells) == 0:
        return total
    m, i, j = cells.unbind(1)
    offsets = torch.arange(WINDOW, device=low.device)
    ii = (i[:, None] + offsets).clamp_(max=low.shape[1] - 1)
    jj = (j[:, None] + offsets).clamp_(max=low.shape[2] - 1)
    values = low[m[:, None, None], ii[:, :, None], jj[:, None, :]]  # (E, 3, 3)
    full = amap.weights[i] @ values @ bmap.weights[j].transpose(1, 2)  # (E, ra, rb)
    hits = (full > thresh).sum(dim=(1, 2))  # NaN in padding slots never counts
    return total.index_add_(0, m, hits)


def count_above(
    low: torch.Tensor, maps: tuple[AxisMap, AxisMap], thresholds, max_work: int | None = None
) -> list[torch.Tensor] | None:
    """For each threshold, the number of full-resolution pixels above it for each map in
    ``low`` (n, L, L) (dim 1 resized by ``maps[0]``, dim 2 by ``maps[1]``), as int64; None if
    more than ``max_work`` pixels would need evaluating one by one."""
    amap, bmap = maps
    low = low[:, : amap.span, : bmap.span]
    flat = low.flatten(1)
    vmin, vmax = flat.amin(dim=1), flat.amax(dim=1)
    # a threshold below or above all of a map's values needs no cells
    easy = torch.ones_like(vmin, dtype=torch.bool)
    for t in thresholds:
        easy &= (vmin > t) | (vmax <= t)
    hard = torch.nonzero(~easy).flatten()
    window = _window_min_max(low[hard]) if len(hard) else None
    out = []
    for t in thresholds:
        counts = torch.where(vmin > t, amap.size * bmap.size, 0)
        if len(hard):
            by_cells = _count_cells(low[hard], maps, t, window, max_work)
            if by_cells is None:
                return None
            counts[hard] = by_cells
        out.append(counts)
    return out


def stability_from_low_res(
    low: torch.Tensor, maps: tuple[AxisMap, AxisMap], mask_threshold: float, offset: float, max_work: int
) -> torch.Tensor | None:
    """``calculate_stability_score`` of the full-resolution logits of ``low`` (n, L, L), or
    None when the caller should compute it at full resolution."""
    counts = count_above(low, maps, (mask_threshold + offset, mask_threshold - offset), max_work)
    if counts is None:
        return None
    inter, union = counts
    return inter.to(torch.int32) / union.to(torch.int32)
