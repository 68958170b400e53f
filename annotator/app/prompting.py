"""Prompting: modes, clicks and boxes, SAM's candidates, and accepting a mask.

A click in select mode picks a mask (``editing.pick``); in the other modes it adds a point
or a box corner to the session's ``Prompt`` and runs the decoder under the model lock.
"""

from __future__ import annotations

import math

from annotator.annotations import markers
from annotator.annotations.rle import normalize as to_rle
from annotator.app import editing, memory
from annotator.app.checks import check_mode, need_embedding, need_image
from annotator.app.classes import note_label
from annotator.app.context import Context
from annotator.app.state import MODES, Session, WorkbenchError
from annotator.app.text import score_text
from annotator.models.prompt import Prompt
from annotator.models.prompt import click as prompt_click
from annotator.models.prompt import remove_point as prompt_remove_point

MODE_HINTS = {
    "positive": "Click the object to add a positive point.",
    "negative": "Click where the mask should not reach.",
    "box": "Click two opposite corners of a box.",
    "select": "Click a mask to (de)select it; click again at the same spot for the mask beneath.",
}


def set_mode(s: Session, mode: str) -> str:
    check_mode(mode, MODES)
    switch_mode(s, mode)
    return MODE_HINTS[mode]


def switch_mode(s: Session, mode: str) -> None:
    # Idempotent: the UI sends the mode with every click and separately when it changes,
    # and the two may arrive in either order; only a real change drops a half-drawn box.
    if mode != s.mode:
        s.mode = mode
        s.prompt.corner = None


def to_image_xy(s: Session, x: float, y: float) -> tuple[float, float]:
    """A canvas click (display pixels, what the browser reports) in image pixels."""
    need_image(s)
    return markers.to_image_xy(x, y, s.scale, s.image.shape[:2])


def click(ctx: Context, s: Session, x: float, y: float, mode: str | None = None) -> str:
    """A click at (x, y) in original image pixels, in ``mode`` (default: the session's)."""
    need_image(s)
    if mode is not None:
        check_mode(mode, MODES)
        switch_mode(s, mode)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise WorkbenchError("click coordinates must be numbers")
    if s.mode == "select":
        return editing.pick(s, x, y)
    h, w = s.image.shape[:2]
    if not (0 <= x <= w and 0 <= y <= h):
        raise WorkbenchError(f"The point ({x:g}, {y:g}) is outside the image ({w}x{h} pixels); click on the image.")
    need_embedding(s)
    before = s.prompt.copy()
    try:
        with ctx.prompt_lock():
            msg = prompt_click(s.prompt, ctx.prompt_segmenter, s.embedding, s.mode, x, y)
    except ValueError as e:
        s.prompt = before  # a refused click leaves the prompt as it was
        raise WorkbenchError(str(e)) from None
    return msg + score_text(s.prompt)


def choose_candidate(s: Session, position: int) -> str:
    try:
        s.prompt.choose(int(position))
    except ValueError as e:
        raise WorkbenchError(str(e)) from None
    return f"candidate {s.prompt.choice + 1}" + score_text(s.prompt)


def clear_prompt(s: Session) -> str:
    s.prompt = Prompt()
    return "Prompt cleared."


def accept(ctx: Context, s: Session, label: str | None = None) -> str:
    """Add the prompt's current mask to the document (accepted, with ``label``)."""
    need_image(s)
    mask = s.prompt.mask
    if mask is None:
        raise WorkbenchError("Nothing to accept: click on the object first.")
    if not mask.any():
        raise WorkbenchError("The mask is empty; add a point or choose another candidate.")
    memory.need_room_for_masks(ctx.limits, s, 1, "accept this mask")
    rle = to_rle(mask, s.doc.size)
    dropped = memory.make_room(ctx.limits, s, len(rle["counts"]), "accept this mask")
    label = (label or "").strip() or None
    ann_id = s.doc.add(
        rle,
        source="prompt",
        label=label,
        prompts=s.prompt.record(),
        predicted_iou=s.prompt.score,
        review="accepted",
        meta={"model": ctx.info.model_tag},
    )
    note_label(s, label)  # a new label is a new class
    s.prompt = Prompt()
    # the next object starts with a positive click: a sticky negative mode would make its
    # first click silently negative (a box user keeps drawing boxes)
    if s.mode != "box":
        switch_mode(s, "positive")
    return f"Added mask {ann_id}" + (f" ({label})" if label else "") + f".{dropped}"


def remove_point(ctx: Context, s: Session, index: int) -> str:
    """Remove prompt point ``index`` (0-based; a click on it in the canvas) and predict
    again from the points left."""
    need_image(s)
    need_embedding(s)
    try:
        with ctx.prompt_lock():
            prompt_remove_point(s.prompt, ctx.prompt_segmenter, s.embedding, int(index))
    except ValueError as e:
        raise WorkbenchError(str(e)) from None
    return f"Removed point {int(index) + 1}." + score_text(s.prompt)


def point(ctx: Context, s: Session, x: float, y: float, kind: str) -> str:
    """A click on the browser canvas adding a ``kind`` point ("positive", "negative") or box
    corner whatever the mode: a right click adds the opposite point, and the mode stays."""
    mode = s.mode
    try:
        return click(ctx, s, x, y, kind)
    finally:
        s.mode = mode


def drag_box(ctx: Context, s: Session, x0: float, y0: float, x1: float, y1: float) -> str:
    """A box drawn in one drag: the same as its two corners clicked in box mode (the mode
    itself is left as it was)."""
    need_image(s)
    mode = s.mode
    s.prompt.corner = None
    try:
        click(ctx, s, x0, y0, "box")
        return click(ctx, s, x1, y1, "box")
    finally:
        s.mode = mode
        s.prompt.corner = None
