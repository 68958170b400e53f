"""The per-image annotation document: masks as COCO RLE, edits with undo/redo, hit testing.

An ``AnnotationDocument`` holds the annotations of one image. Each ``Annotation`` is an
immutable, plain record (its mask is compressed RLE bytes, never a dense array), so a
document state is a small mapping of ids to records plus a z-order; every edit builds a
new state that shares all unchanged records (and their RLE bytes) with the old one, and
undo/redo just moves along the list of states. ``version`` grows with every change, so
renderers and autosave can tell when to redo their work.

The hit test answers "which masks contain pixel (x, y)", topmost first, without decoding
masks: a vectorised box prefilter, then a binary search in the mask's cumulative run
lengths (the pixel's column-major index ``x * h + y`` falls in a foreground run when the
number of run ends before it is odd).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.annotation import (  # noqa: F401  (re-exported: the document's vocabulary)
    EDITABLE_FIELDS,
    REVIEW_STATES,
    SOURCES,
    Annotation,
    make_annotation,
    updated,
)
from annotator.annotations.brush import apply_strokes
from annotator.annotations.hits import HitIndex, next_in_stack  # noqa: F401  (re-exported)

DEFAULT_MAX_HISTORY = 100


@dataclass(frozen=True)
class _State:
    items: Mapping[int, Annotation]  # never mutated once the state exists
    order: tuple[int, ...]  # z-order, bottom first
    selection: frozenset[int]
    next_id: int
    action: str  # what made this state, for "Undo <action>"
    picked: tuple[int, ...] = ()  # the selection in the order it was made, first pick first


class AnnotationDocument:
    """The annotations of one image, with undoable edits and a hit test."""

    def __init__(self, height: int, width: int, *, max_history: int = DEFAULT_MAX_HISTORY, image_id: Any = None):
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.size = (int(height), int(width))
        self.image_id = image_id
        self.max_history = int(max_history)
        self.version = 0
        self._states = [_State({}, (), frozenset(), 1, "open")]
        self._cursor = 0
        self._lock = threading.RLock()
        self.index = HitIndex()
        self._boxes_version = -1
        self._boxes_ids = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4), np.int64)

    # -- reading ---------------------------------------------------------------------------
    @property
    def _state(self) -> _State:
        return self._states[self._cursor]

    @property
    def ids(self) -> tuple[int, ...]:
        """Annotation ids in z-order, bottom first."""
        return self._state.order

    @property
    def annotations(self) -> list[Annotation]:
        """Annotations in z-order, bottom first."""
        s = self._state
        return [s.items[i] for i in s.order]

    @property
    def selection(self) -> frozenset[int]:
        return self._state.selection

    def selected(self) -> list[int]:
        """Selected ids in z-order, bottom first."""
        sel = self._state.selection
        return [i for i in self._state.order if i in sel]

    def selected_in_order(self) -> list[int]:
        """Selected ids in the order they were selected, first pick first (masks selected
        together, e.g. by ``select`` with several ids, keep the order they were given in)."""
        return list(self._state.picked)

    def __len__(self) -> int:
        return len(self._state.order)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self.annotations)

    def __contains__(self, ann_id) -> bool:
        return ann_id in self._state.items

    def __getitem__(self, ann_id: int) -> Annotation:
        try:
            return self._state.items[ann_id]
        except KeyError:
            raise KeyError(f"no annotation with id {ann_id}") from None

    def z(self, ann_id: int) -> int:
        self[ann_id]
        return self._state.order.index(ann_id)

    def mask(self, ann_id: int) -> np.ndarray:
        return self[ann_id].mask()

    def rles(self, ids: Iterable[int] | None = None) -> list[dict]:
        ids = self._state.order if ids is None else ids
        return [self[i].rle for i in ids]

    def records(self) -> list[dict]:
        """Every annotation as a JSON-serialisable dict, bottom first, with its ``z``."""
        return [a.to_record(z) for z, a in enumerate(self.annotations)]

    @classmethod
    def from_records(cls, height: int, width: int, records: Iterable[Mapping], **kwargs) -> AnnotationDocument:
        doc = cls(height, width, **kwargs)
        recs = sorted(records, key=lambda r: r.get("z", 0))
        anns = [Annotation.from_record(r) for r in recs]
        for a in anns:
            if a.size != doc.size:
                raise ValueError(
                    f"annotation {a.id} is {a.size[0]}x{a.size[1]} but the image is {doc.size[0]}x{doc.size[1]}"
                )
        items = {a.id: a for a in anns}
        if len(items) != len(anns):
            raise ValueError("annotation records repeat an id")
        doc._states = [_State(items, tuple(a.id for a in anns), frozenset(), max(items, default=0) + 1, "open")]
        return doc

    def nbytes(self) -> int:
        """Bytes held by masks and the hit-test index (RLE strings + index arrays + boxes)."""
        seen: set[int] = set()
        total = 0
        for state in self._states:
            for a in state.items.values():
                if id(a.counts) not in seen:
                    seen.add(id(a.counts))
                    total += len(a.counts)
        return total + self.index.nbytes + self._boxes.nbytes + self._boxes_ids.nbytes

    # -- history ---------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        return self._cursor < len(self._states) - 1

    @property
    def undo_action(self) -> str | None:
        return self._state.action if self.can_undo else None

    @property
    def redo_action(self) -> str | None:
        return self._states[self._cursor + 1].action if self.can_redo else None

    def undo(self) -> str | None:
        """Step back one edit; returns what was undone (None when there is nothing)."""
        with self._lock:
            if not self.can_undo:
                return None
            action = self._state.action
            self._cursor -= 1
            self.version += 1
            return action

    def redo(self) -> str | None:
        with self._lock:
            if not self.can_redo:
                return None
            self._cursor += 1
            self.version += 1
            return self._state.action

    def _commit(self, state: _State) -> None:
        del self._states[self._cursor + 1 :]
        self._states.append(state)
        if len(self._states) > self.max_history + 1:
            del self._states[: len(self._states) - self.max_history - 1]
        self._cursor = len(self._states) - 1
        self.version += 1
        if len(self.index) > 2 * len(state.items) + 64:
            self.index.prune(k for s in self._states for k in s.items)

    def _edit(self, action: str, items=None, order=None, selection=None, next_id=None) -> None:
        s = self._state
        if selection is None:
            picked = s.picked
        else:  # masks still selected keep their place; new ones follow in the order given
            selection = list(dict.fromkeys(selection))
            keep = set(selection)
            picked = tuple([i for i in s.picked if i in keep] + [i for i in selection if i not in set(s.picked)])
        new = _State(
            s.items if items is None else items,
            s.order if order is None else tuple(order),
            s.selection if selection is None else frozenset(selection),
            s.next_id if next_id is None else next_id,
            action,
            picked,
        )
        if new.items is s.items and new.order == s.order and new.selection == s.selection:
            return  # nothing changed: no history entry
        self._commit(new)

    def _ids(self, ids, default_selection: bool = True) -> list[int]:
        """Validated ids in z-order; None means the selection."""
        s = self._state
        if ids is None:
            if not default_selection:
                raise ValueError("no ids given")
            ids = s.selection
        elif isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        ids = set(int(i) for i in ids)
        missing = ids - set(s.items)
        if missing:
            raise KeyError(f"no annotation with id {sorted(missing)[0]}")
        return [i for i in s.order if i in ids]

    # -- edits -----------------------------------------------------------------------------
    def add(self, mask, *, select: bool = False, source: str = "prompt", **fields) -> int:
        """Add a mask (dense (H, W) array or RLE dict) on top; returns its id."""
        return self.add_many([mask], select=select, source=source, action="add mask", **fields)[0]

    def add_many(
        self,
        masks: Iterable,
        *,
        select: bool = False,
        source: str = "auto",
        action: str | None = None,
        replace: Iterable[int] = (),
        **fields,
    ) -> list[int]:
        """Add many masks as one undoable step; returns their ids (bottom first).

        Each item is a mask (dense array or RLE dict) or a record like those of SAM's
        automatic generator: ``{"segmentation": ..., "predicted_iou": ..., ...}``; keyword
        fields apply to every item, an item's own fields win. ``replace``: ids removed in
        the same step (e.g. the masks of an earlier run that these supersede).
        """
        with self._lock:
            s = self._state
            gone = set(self._ids(list(replace), default_selection=False)) if replace else set()
            next_id = s.next_id
            parsed = []
            for k, item in enumerate(masks):
                item_fields = dict(fields, source=source)
                if isinstance(item, Mapping) and "segmentation" in item:
                    item = dict(item)
                    mask = item.pop("segmentation")
                    for drop in ("area", "bbox", "id"):
                        item.pop(drop, None)
                    item_fields.update(item)
                else:
                    mask = item
                try:
                    rle = rle_utils.normalize(mask, self.size, check=False)
                except rle_utils.RleError as e:
                    raise ValueError(f"mask {k}: {e}") from None
                parsed.append((rle, item_fields))
            try:  # compressed strings are read back once, all together
                rle_utils.check_many([rle for rle, _ in parsed])
            except rle_utils.RleError as e:
                raise ValueError(str(e)) from None
            new_anns = []
            for rle, item_fields in parsed:
                new_anns.append(make_annotation(next_id, rle, **item_fields))
                next_id += 1
            if not new_anns:
                return []
            items = {k: v for k, v in s.items.items() if k not in gone}
            items.update((a.id, a) for a in new_anns)
            new_ids = [a.id for a in new_anns]
            n = len(new_ids)
            if select:
                selection = new_ids
            elif gone & s.selection:
                selection = [i for i in s.picked if i not in gone]
            else:
                selection = None
            self._edit(
                action or f"add {n} mask{'s' * (n != 1)}",
                items=items,
                order=tuple(i for i in s.order if i not in gone) + tuple(new_ids),
                selection=selection,
                next_id=next_id,
            )
            return new_ids

    def update(self, ann_id: int, *, mask=None, action: str | None = None, **fields) -> None:
        """Change one annotation's mask and/or fields (e.g. a refined prediction)."""
        with self._lock:
            s = self._state
            old = self[ann_id]
            if mask is not None:
                rle = rle_utils.normalize(mask, self.size)
                new = make_annotation(
                    ann_id,
                    rle,
                    **{
                        f.name: getattr(old, f.name)
                        for f in dataclasses.fields(old)
                        if f.name in (*EDITABLE_FIELDS, "parents", "subtracted")
                    },
                )
            else:
                new = old
            new = updated(new, fields)
            if new == old:
                return
            self._edit(action or f"edit mask {ann_id}", items={**s.items, ann_id: new})

    def select(self, ids, mode: str = "replace") -> None:
        """Change the selection: ``replace`` it, ``add`` to it, ``remove`` from it or ``toggle``."""
        with self._lock:
            given = self._given_order(ids)
            ids = set(given)
            cur = self._state.selection
            new = {"replace": ids, "add": cur | ids, "remove": cur - ids, "toggle": cur ^ ids}.get(mode)
            if new is None:
                raise ValueError(f"mode must be replace, add, remove or toggle, got {mode!r}")
            self._edit(
                f"select {len(new)}",
                selection=[i for i in self._state.picked if i in new] + [i for i in given if i in new],
            )

    def _given_order(self, ids) -> list[int]:
        """Validated ids in the order given (a set or frozenset: in z-order)."""
        in_z = self._ids(ids, default_selection=False)
        if isinstance(ids, (int, np.integer, set, frozenset)):
            return in_z
        return list(dict.fromkeys(int(i) for i in ids))

    def clear_selection(self) -> None:
        with self._lock:
            self._edit("clear selection", selection=())

    def _set_field(self, ids, action: str, **changes) -> None:
        s = self._state
        items = dict(s.items)
        changed = False
        for i in self._ids(ids):
            new = updated(s.items[i], changes)
            if new != s.items[i]:
                items[i] = new
                changed = True
        if changed:
            self._edit(action, items=items)

    def set_visible(self, ids=None, visible: bool = True) -> None:
        with self._lock:
            self._set_field(ids, "show" if visible else "hide", visible=visible)

    def toggle_visibility(self, ids=None) -> None:
        """Flip each mask's visibility (ids default to the selection)."""
        with self._lock:
            s = self._state
            ids = self._ids(ids)
            if not ids:
                return
            items = dict(s.items)
            for i in ids:
                items[i] = dataclasses.replace(s.items[i], visible=not s.items[i].visible)
            self._edit(f"toggle visibility of {len(ids)}", items=items)

    def relabel(self, ids=None, label: str | None = None) -> None:
        with self._lock:
            self._set_field(ids, f"label {label!r}", label=label)

    def set_review(self, ids=None, state: str = "accepted") -> None:
        with self._lock:
            self._set_field(ids, state.removesuffix("ed") if state != "pending" else "reset review", review=state)

    def accept(self, ids=None) -> None:
        self.set_review(ids, "accepted")

    def reject(self, ids=None) -> None:
        self.set_review(ids, "rejected")

    def delete(self, ids=None) -> list[int]:
        """Remove masks (default: the selection); returns the removed ids."""
        with self._lock:
            s = self._state
            ids = self._ids(ids)
            if not ids:
                return []
            gone = set(ids)
            items = {k: v for k, v in s.items.items() if k not in gone}
            self._edit(
                f"delete {len(ids)}",
                items=items,
                order=[i for i in s.order if i not in gone],
                selection=[i for i in s.picked if i not in gone],
            )
            return ids

    def merge(self, ids=None, *, label: str | None = None) -> int:
        """Replace masks (default: the selection, at least two) by their union.

        The new mask takes the place of the topmost one in the z-order and keeps the
        provenance: ``parents`` lists the merged ids, ``prompts`` collects theirs. It keeps
        the review state its parts share (accepted parts make an accepted mask); parts that
        disagree make a pending one, to be reviewed again.
        """
        with self._lock:
            s = self._state
            ids = self._ids(ids)
            if len(ids) < 2:
                raise ValueError("select at least two masks to merge")
            parts = [s.items[i] for i in ids]
            union = rle_utils.union([p.rle for p in parts])
            labels = [p.label for p in parts if p.label is not None]
            prompts = [{"id": p.id, "prompts": p.prompts} for p in parts if p.prompts is not None]
            reviews = {p.review for p in parts}
            new = make_annotation(
                s.next_id,
                union,
                label=label if label is not None else (labels[-1] if labels else None),
                source="merge",
                prompts=prompts or None,
                parents=ids,
                visible=any(p.visible for p in parts),
                review=reviews.pop() if len(reviews) == 1 else "pending",
            )
            gone = set(ids)
            top = max(s.order.index(i) for i in ids)
            order = [new.id if k == top else i for k, i in enumerate(s.order) if i not in gone or k == top]
            items = {k: v for k, v in s.items.items() if k not in gone}
            items[new.id] = new
            self._edit(f"merge {len(ids)}", items=items, order=order, selection={new.id}, next_id=s.next_id + 1)
            return new.id

    def subtract(self, target: int, tools=None) -> None:
        """Cut the pixels of ``tools`` (default: the selection, minus ``target``) out of
        ``target``, which keeps its id; ``subtracted`` records the tools' ids."""
        with self._lock:
            s = self._state
            old = self[target]
            tools = [i for i in self._ids(tools) if i != target]
            if not tools:
                raise ValueError("choose at least one other mask to subtract")
            cut = rle_utils.union([s.items[i].rle for i in tools])
            rest = rle_utils.difference(old.rle, cut)
            if int(rle_utils.areas([rest])[0]) == 0:
                raise ValueError(f"subtracting would leave mask {target} empty; delete it instead")
            new = make_annotation(
                target,
                rest,
                **{
                    f.name: getattr(old, f.name)
                    for f in dataclasses.fields(old)
                    if f.name in (*EDITABLE_FIELDS, "parents")
                },
            )
            new = dataclasses.replace(new, subtracted=old.subtracted + tuple(tools))
            self._edit(f"subtract {len(tools)} from {target}", items={**s.items, target: new})

    def paint(self, ann_id: int, strokes: Sequence[Mapping]) -> None:
        """Brush and eraser strokes on one mask, as one undoable edit ("paint mask N").

        Each stroke is ``{"points": [[x, y], ...], "radius": r, "erase": bool}`` in image
        pixels, applied in order (see ``apply_strokes``). Erasing a mask away entirely is
        refused: delete it instead.
        """
        with self._lock:
            old = self[ann_id]
            mask = apply_strokes(old.mask(), strokes)
            if not mask.any():
                raise ValueError(f"erasing would leave mask {ann_id} empty; delete it instead")
            self.update(ann_id, mask=mask, action=f"paint mask {ann_id}")

    def bring_to_front(self, ids=None) -> None:
        with self._lock:
            ids = self._ids(ids)
            rest = [i for i in self._state.order if i not in set(ids)]
            self._edit("bring to front", order=rest + ids)

    def send_to_back(self, ids=None) -> None:
        with self._lock:
            ids = self._ids(ids)
            rest = [i for i in self._state.order if i not in set(ids)]
            self._edit("send to back", order=ids + rest)

    def move(self, ann_id: int, z: int) -> None:
        """Put one mask at position ``z`` of the z-order (0 = bottom, -1 = top)."""
        with self._lock:
            self[ann_id]
            order = [i for i in self._state.order if i != ann_id]
            n = len(order) + 1
            if not -n <= z < n:
                raise IndexError(f"z must be in [{-n}, {n - 1}], got {z}")
            order.insert(z % n, ann_id)
            self._edit(f"move {ann_id}", order=order)

    def raise_(self, ids=None, steps: int = 1) -> None:
        """Move masks ``steps`` places up (negative: down), keeping their relative order."""
        with self._lock:
            ids = self._ids(ids)
            order = list(self._state.order)
            pos = {i: k for k, i in enumerate(order)}
            moving = sorted(ids, key=pos.get, reverse=steps > 0)
            for i in moving:
                k = order.index(i)
                dest = min(max(k + steps, 0), len(order) - 1)
                order.insert(dest, order.pop(k))
            self._edit("raise" if steps > 0 else "lower", order=order)

    def lower(self, ids=None, steps: int = 1) -> None:
        self.raise_(ids, -steps)

    # -- hit test ------------------------------------------------------------------------------
    def _box_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids (topmost first) and inclusive pixel boxes x0, y0, x1, y1 for this version."""
        if self._boxes_version != self.version:
            anns = self.annotations[::-1]
            if anns:
                b = np.array([a.bbox for a in anns], dtype=np.float64)
                self._boxes = np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2] - 1, b[:, 1] + b[:, 3] - 1], axis=1).astype(
                    np.int64
                )
            else:
                self._boxes = np.zeros((0, 4), np.int64)
            self._boxes_ids = np.array([a.id for a in anns], dtype=np.int64)
            self._boxes_version = self.version
        return self._boxes_ids, self._boxes

    def build_index(self) -> None:
        """Index every mask now (otherwise masks are indexed on their first hit test)."""
        self.index.build(self.annotations)
        self._box_table()

    def hit_test(self, x: float, y: float, *, visible_only: bool = False) -> list[int]:
        """Ids of the masks containing pixel (x, y), topmost first."""
        h, w = self.size
        xi, yi = int(math.floor(x)), int(math.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            return []
        with self._lock:
            ids, boxes = self._box_table()
            cand = np.flatnonzero((boxes[:, 0] <= xi) & (xi <= boxes[:, 2]) & (boxes[:, 1] <= yi) & (yi <= boxes[:, 3]))
            items = self._state.items
            out = []
            for k in cand:
                a = items[int(ids[k])]
                if visible_only and not a.visible:
                    continue
                if self.index.contains(a, xi, yi):
                    out.append(a.id)
            return out

    def pick(self, x: float, y: float, current: int | None = None, *, visible_only: bool = False) -> int | None:
        """The mask a click at (x, y) picks: the topmost, or, when ``current`` was picked by
        the previous click at this pixel, the next one down (cycling through nested masks)."""
        return next_in_stack(self.hit_test(x, y, visible_only=visible_only), current)
