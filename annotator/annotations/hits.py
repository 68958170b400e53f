"""Which masks contain pixel (x, y), topmost first, without decoding masks.

A vectorised box prefilter, then a binary search in the mask's cumulative run lengths (the
pixel's column-major index ``x * h + y`` falls in a foreground run when the number of run
ends before it is odd).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.annotation import Annotation


class HitIndex:
    """Per-mask cumulative run ends for exact point tests, built on first use.

    Keyed by annotation id and checked against the RLE bytes object, so a mask whose
    geometry changed (subtract, update) is re-indexed. ``nbytes`` accounts the arrays.
    """

    def __init__(self):
        self._ends: dict[int, tuple[bytes, np.ndarray]] = {}

    def ends(self, ann: Annotation) -> np.ndarray:
        hit = self._ends.get(ann.id)
        if hit is not None and hit[0] is ann.counts:
            return hit[1]
        runs = rle_utils.run_lengths(ann.counts)
        dtype = np.int32 if ann.size[0] * ann.size[1] < 2**31 else np.int64
        ends = np.cumsum(runs).astype(dtype)
        self._ends[ann.id] = (ann.counts, ends)
        return ends

    def build(self, anns: Iterable[Annotation]) -> None:
        anns = [a for a in anns if not (a.id in self._ends and self._ends[a.id][0] is a.counts)]
        if not anns:
            return
        values, offsets = rle_utils.run_lengths_many([a.counts for a in anns])
        for i, a in enumerate(anns):
            dtype = np.int32 if a.size[0] * a.size[1] < 2**31 else np.int64
            self._ends[a.id] = (a.counts, np.cumsum(values[offsets[i] : offsets[i + 1]]).astype(dtype))

    def contains(self, ann: Annotation, x: int, y: int) -> bool:
        ends = self.ends(ann)
        pixel = x * ann.size[0] + y
        return bool(np.searchsorted(ends, pixel, side="right") & 1)

    def prune(self, keep: Iterable[int]) -> None:
        keep = set(keep)
        for k in [k for k in self._ends if k not in keep]:
            del self._ends[k]

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for _, e in self._ends.values())

    def __len__(self) -> int:
        return len(self._ends)


def next_in_stack(hits: Sequence[int], current: int | None) -> int | None:
    """Click cycling: the mask to pick from ``hits`` (topmost first) when ``current`` was
    picked by the previous click at the same pixel: the one below it, wrapping to the top."""
    if not hits:
        return None
    if current in hits:
        return hits[(list(hits).index(current) + 1) % len(hits)]
    return hits[0]
