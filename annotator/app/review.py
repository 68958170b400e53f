"""Reviewing masks: the review cursor (J/K, Y/X), the filter and sort of what is shown, and
near-duplicate groups (found, looked at, resolved)."""

from __future__ import annotations

import numpy as np

from annotator.annotations import redundancy
from annotator.app.checks import need_image
from annotator.app.state import REVIEW_FILTERS, SORT_KEYS, MaskFilter, Session, WorkbenchError
from annotator.app.text import ids_text, plural
from annotator.app.view import shown, table_order

REVIEW_STATES = ("accepted", "rejected", "pending")


def review(s: Session, state: str) -> str:
    """Mark the mask under review (or, with none, the selection) accepted / rejected /
    pending, then move on to the next pending mask in the table's order."""
    if state not in REVIEW_STATES:
        raise WorkbenchError(f"review state must be accepted, rejected or pending; got {state!r}")
    need_image(s)
    if s.cursor is not None and s.cursor in s.doc:
        ids = [s.cursor]
    elif s.doc.selection:
        ids = s.doc.selected()
    else:
        raise WorkbenchError("Nothing to review: press Next (J) to start, or select masks.")
    s.doc.set_review(ids, state)
    if s.cursor is not None:
        s.cursor = next_pending(s, s.cursor)
    after = f" Next: mask {s.cursor}." if s.cursor is not None else " No pending masks left."
    return f"{ids_text(ids).capitalize()} {state}.{after}"


def step(s: Session, delta: int = 1) -> str:
    """Move the review cursor to the next (``delta`` > 0) or previous mask shown."""
    need_image(s)
    order = [a.id for a in table_order(s)]
    if not order:
        s.cursor = None
        return "No masks to review."
    if s.cursor in order:
        k = (order.index(s.cursor) + (1 if delta > 0 else -1)) % len(order)
    else:
        k = 0 if delta > 0 else len(order) - 1
    s.cursor = order[k]
    a = s.doc[s.cursor]
    return f"Reviewing mask {a.id} ({k + 1} of {len(order)}, {a.review}): Y accept, X reject, J/K next/previous."


def next_pending(s: Session, after: int) -> int | None:
    order = [a.id for a in table_order(s)]
    k = order.index(after) if after in order else -1
    for i in order[k + 1 :] + order[: k + 1]:
        if s.doc[i].review == "pending":
            return i
    return None


def set_filter(
    s: Session,
    min_iou: float = 0.0,
    min_stability: float = 0.0,
    min_area: int = 0,
    review: str = "all",
    sort_by: str = "id",
    descending: bool = False,
) -> str:
    if review not in REVIEW_FILTERS:
        raise WorkbenchError(f"review filter must be one of {', '.join(REVIEW_FILTERS)}")
    if sort_by not in SORT_KEYS:
        raise WorkbenchError(f"sort key must be one of {', '.join(SORT_KEYS)}")
    s.filter = MaskFilter(
        float(min_iou or 0), float(min_stability or 0), int(min_area or 0), review, sort_by, bool(descending)
    )
    if s.doc is None:
        return ""
    return f"Showing {len(shown(s))} of {len(s.doc)} masks."


# -- duplicates ------------------------------------------------------------------------------
def find_duplicates(s: Session, iou_thresh: float = 0.8) -> str:
    """Group the shown masks whose IoU exceeds ``iou_thresh`` (greedy, best score leads:
    ``redundancy.group_by_iou``); groups of two or more are listed for resolving."""
    if not 0.0 < float(iou_thresh) < 1.0:
        raise WorkbenchError("the IoU threshold must be between 0 and 1")
    need_image(s)
    anns = [a for a in shown(s) if a.review != "rejected"]
    found = []
    if len(anns) > 1:
        leader = redundancy.group_by_iou([a.rle for a in anns], [quality(a) for a in anns], float(iou_thresh))
        for k in np.unique(leader):
            members = [anns[i].id for i in np.flatnonzero(leader == k)]
            if len(members) > 1:
                members.remove(anns[k].id)
                found.append([anns[k].id, *members])
    found.sort(key=lambda g: -len(g))
    s.duplicates = found
    if not found:
        return f"No duplicates: no two shown masks overlap with IoU > {iou_thresh:.2f}."
    extra = sum(len(g) - 1 for g in found)
    return (
        f"{plural(len(found), 'group')} of near-duplicates (IoU > {iou_thresh:.2f}), "
        f"{extra} masks more than needed. Click a group to see it; keep the best "
        "of each or merge each into one."
    )


def duplicate_rows(s: Session) -> list[list]:
    """The duplicate groups for the inspector's table: group, best mask, others, size."""
    return [[k + 1, g[0], ", ".join(map(str, g[1:])), len(g)] for k, g in enumerate(groups(s))]


def select_duplicates(s: Session, group: int) -> str:
    """Select the masks of one group (1-based, as listed) to look at them."""
    ids = _group(s, group)
    s.doc.select(ids, "replace")
    return f"Group {int(group)}: best mask {ids[0]}, duplicates {ids_text(ids[1:])}."


def resolve_duplicates(s: Session, how: str = "keep_best", group: int | None = None) -> str:
    """``keep_best``: delete all but each group's best mask (one undoable step);
    ``merge``: replace each group by the union of its masks (one step per group).
    ``group`` (1-based) limits it to one group.

    Review decisions outrank scores: an accepted mask is never deleted. ``keep_best``
    keeps a group's accepted masks in place of its best one; ``merge`` skips a group
    holding an accepted mask. The message names every such group."""
    if how not in ("keep_best", "merge"):
        raise WorkbenchError("resolve duplicates by 'keep_best' or 'merge'")
    todo = groups(s) if group is None else [_group(s, group)]
    if not todo:
        raise WorkbenchError("No duplicate groups: press Find duplicates first.")
    number = {id(g): k + 1 for k, g in enumerate(s.duplicates)}
    accepted = {id(g): [i for i in g if s.doc[i].review == "accepted"] for g in todo}
    if how == "keep_best":
        msg, left = _keep_best(s, todo, number, accepted), []
    else:
        msg, left = _merge_groups(s, todo, number, accepted)
    if s.cursor is not None and s.cursor not in s.doc:
        s.cursor = None
    s.duplicates = left  # groups skipped stay listed, to look at
    return msg


def _keep_best(s: Session, todo: list, number: dict, accepted: dict) -> str:
    gone, notes = [], []
    for g in todo:
        keep = accepted[id(g)] or g[:1]
        gone += [i for i in g if i not in keep]
        if keep != g[:1]:
            best = "" if g[0] in keep else f" instead of the best, mask {g[0]}"
            notes.append(f"group {number[id(g)]}: kept accepted {ids_text(keep)}{best}")
    s.doc.delete(gone)
    msg = f"Kept the best of {plural(len(todo), 'group')}; deleted {plural(len(gone), 'mask')}."
    if notes:
        msg += " Accepted masks are never deleted: " + "; ".join(notes) + "."
    return msg


def _merge_groups(s: Session, todo: list, number: dict, accepted: dict) -> tuple[str, list]:
    skipped = [g for g in todo if accepted[id(g)]]
    new = [s.doc.merge(g) for g in todo if not accepted[id(g)]]
    msg = f"Merged {plural(len(new), 'group')} into {ids_text(new)}." if new else "No group merged."
    if skipped:
        msg += (
            " Skipped "
            + "; ".join(f"group {number[id(g)]} (holds accepted {ids_text(accepted[id(g)])})" for g in skipped)
            + ": merging would replace an accepted mask; merge it by hand if you mean to."
        )
    return msg, skipped


def groups(s: Session) -> list[list[int]]:
    """The last duplicate search, less the masks deleted since (groups left with one
    mask are gone; if a group's best mask went, the next one leads)."""
    if s.doc is None:
        return []
    s.duplicates = [g for g in ([i for i in g if i in s.doc] for g in s.duplicates) if len(g) > 1]
    return s.duplicates


def _group(s: Session, group: int) -> list[int]:
    found = groups(s)
    if not 1 <= int(group) <= len(found):
        raise WorkbenchError(f"there are {len(found)} duplicate groups; {group} is not one")
    return found[int(group) - 1]


def quality(a) -> float:
    """What makes the best of a group of duplicates: SAM's predicted IoU, else stability."""
    for v in (a.predicted_iou, a.stability_score):
        if v is not None:
            return v
    return 0.0
