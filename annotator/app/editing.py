"""Selecting and editing masks: pick under the cursor, merge, subtract, delete, hide,
relabel, undo and redo. Each edit is one undoable step of the document (in a project, of
the project's saved history)."""

from __future__ import annotations

import math

from annotator.annotations.document import next_in_stack
from annotator.app import projects
from annotator.app.checks import need_image, need_selection, targets
from annotator.app.classes import note_label
from annotator.app.context import Context
from annotator.app.state import Session, WorkbenchError
from annotator.app.text import ids_text
from annotator.app.view import shown
from annotator.models.prompt import SAME_PIXEL, undo_last


def pick(s: Session, x: float, y: float) -> str:
    """Select mode: toggle the mask under (x, y); the same spot again moves down the stack."""
    visible = {a.id for a in shown(s)}
    hits = [i for i in s.doc.hit_test(x, y, visible_only=True) if i in visible]
    if not hits:
        s.last_pick = None
        return "No mask here."
    same = s.last_pick is not None and math.hypot(x - s.last_pick[0], y - s.last_pick[1]) < SAME_PIXEL
    current = s.last_pick[2] if same else None
    chosen = next_in_stack(hits, current)
    sel = set(s.doc.selection)
    if current is not None and chosen != current:
        new = (sel - {current}) | {chosen}  # cycling: the next mask down replaces the last pick
    else:
        new = sel ^ {chosen}
    s.doc.select(new, "replace")
    s.last_pick = (x, y, chosen)
    what = "selected" if chosen in new else "deselected"
    depth = ""
    if len(hits) > 1:
        depth = f" ({hits.index(chosen) + 1} of {len(hits)} here; click again for the next)"
    return f"Mask {chosen} {what}{depth}."


def select_mask(s: Session, ann_id: int, mode: str = "toggle") -> str:
    need_image(s)
    try:
        s.doc.select([int(ann_id)], mode)
    except (KeyError, ValueError) as e:
        raise WorkbenchError(str(e).strip("'\"")) from None
    state = "selected" if int(ann_id) in s.doc.selection else "deselected"
    return f"Mask {int(ann_id)} {state}."


def clear_selection(s: Session) -> str:
    need_image(s)
    s.doc.clear_selection()
    return "Selection cleared."


def select_shown(s: Session) -> str:
    need_image(s)
    ids = [a.id for a in shown(s)]
    s.doc.select(ids, "replace")
    return f"{len(ids)} masks selected."


def merge(s: Session) -> str:
    """Replace the selected masks by their union, labelled as the first-selected mask (or,
    if it has none, the first labelled one selected after it)."""
    need_selection(s, 2, "merge")
    picked = s.doc.selected_in_order()
    labels = list(dict.fromkeys(s.doc[i].label for i in picked if s.doc[i].label is not None))
    label = labels[0] if labels else None
    new = s.doc.merge(picked, label=label)
    msg = f"Merged {ids_text(sorted(picked))} into mask {new}"
    if len(labels) > 1:
        dropped = ", ".join(repr(x) for x in labels[1:])
        msg += f", labelled {label!r} (the first selected); dropped the label{'s' * (len(labels) > 2)} {dropped}"
    return msg + "."


def subtract(s: Session) -> str:
    """Cut the masks selected later out of the first-selected one."""
    need_selection(s, 2, "subtract")
    target, *tools = s.doc.selected_in_order()
    try:
        s.doc.subtract(target, tools)
    except ValueError as e:
        raise WorkbenchError(str(e)) from None
    s.doc.select([target], "replace")
    return f"Cut {ids_text(tools)} out of mask {target} (the first selected)."


def delete(s: Session) -> str:
    ids = need_selection(s, 1, "delete")
    s.doc.delete(ids)
    if s.cursor in ids:
        s.cursor = None
    return f"Deleted {ids_text(ids)}. Undo brings them back."


def toggle_visibility(s: Session) -> str:
    """Hide (or show again) the selected masks; a hidden mask is not drawn, only a dashed
    outline while it is selected."""
    ids = need_selection(s, 1, "hide or show")
    s.doc.toggle_visibility(ids)
    hidden = [i for i in ids if not s.doc[i].visible]
    return f"Hid {ids_text(hidden)} (press H again to show)." if hidden else f"Showing {ids_text(ids)}."


def relabel(s: Session, label: str | None) -> str:
    ids = targets(s, "label")
    label = (label or "").strip() or None
    s.doc.relabel(ids, label)
    note_label(s, label)
    return f"Labelled {ids_text(ids)} {label!r}." if label else f"Removed the label of {ids_text(ids)}."


def paint(s: Session, ann_id: int, strokes: list) -> str:
    """Brush / eraser strokes on one mask: one undoable edit (``AnnotationDocument.paint``)."""
    need_image(s)
    try:
        s.doc.paint(int(ann_id), strokes)
    except (KeyError, ValueError, TypeError) as e:
        raise WorkbenchError(str(e).strip("'\"")) from None
    return f"Painted mask {int(ann_id)}. Undo restores it."


def undo(ctx: Context, s: Session) -> str:
    """Undo the last prompt point while prompting, otherwise the last document edit."""
    need_image(s)
    if not s.prompt.empty or s.prompt.corner is not None:
        with ctx.prompt_lock():
            undo_last(s.prompt, ctx.prompt_segmenter, s.embedding)
        return "Removed the last prompt point."
    if projects.in_project(s):
        return projects.history_step(s, forward=False)
    action = s.doc.undo()
    return f"Undid: {action}." if action else "Nothing to undo."


def redo(s: Session) -> str:
    need_image(s)
    if projects.in_project(s):
        return projects.history_step(s, forward=True)
    action = s.doc.redo()
    return f"Redid: {action}." if action else "Nothing to redo."
