"""A session's browser canvas: the frames (``canvas_frames``) that tell it what changed, and
its actions applied as the app's own concern calls.

A session keeps one ``BrowserCanvas``: what its browser canvas holds (``Sent``), the
unguessable key of the image shown (the browser fetches full-resolution crops with it), and
the unguessable channel its frames carry: the canvas's script sends its actions straight to
the server with it (``Workbench.canvas_direct``), outside Gradio's queue. Plain Python, no
Gradio; every function takes the session locked by the caller.
"""

from __future__ import annotations

import secrets
from dataclasses import astuple, dataclass, field
from types import SimpleNamespace

from annotator.annotations import rle as rle_utils
from annotator.app import canvas_frames as cf
from annotator.app import editing, prompting
from annotator.app import view as views
from annotator.app.classes import class_list
from annotator.app.context import Context
from annotator.app.state import PREVIEW_COLOR_BASE, Session, WorkbenchError

# actions the browser shows before the server answers (a point, a box, a removed point)
PROMPT_ACTIONS = ("point", "box", "remove_point", "clear_prompt")


@dataclass
class BrowserCanvas:
    sent: cf.Sent = field(default_factory=cf.Sent)
    image: object = None  # the array the key was made for
    key: str | None = None
    scale: float | None = None  # device pixels per image pixel the canvas shows (it reports it)
    channel: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # see the module's doc
    said: str = ""  # what the last actions said (a message with none, the page's sync, shows it)


def _canvas(s: Session) -> BrowserCanvas:
    if s.canvas is None:
        s.canvas = BrowserCanvas()
    return s.canvas


def forget(s: Session) -> None:
    """The browser lost what it had (reload): the next frame sends everything."""
    if s.canvas is not None:
        old = s.canvas.sent
        s.canvas.sent = cf.Sent(last_action=old.last_action, frame=old.frame)  # numbers go on


def image_key(s: Session) -> str | None:
    c = _canvas(s)
    if s.image is None:
        return None
    if c.image is not s.image:
        c.image, c.key = s.image, secrets.token_urlsafe(12)
    return c.key


def _preview(s: Session) -> tuple[list, list]:
    """Masks a running "segment everything" has found: (id, RLE) for the preview layer and
    a table row each (ids apart from the masks', colours as the server's overlay had)."""
    masks, rows = [], []
    for k, rle in enumerate(s.preview):
        rle = rle_utils.normalize(rle, s.image.shape[:2], check=False)
        ann_id = PREVIEW_COLOR_BASE + k
        masks.append((ann_id, rle))
        rows.append(
            SimpleNamespace(id=ann_id, label=None, visible=True, review="pending", area=0, bbox=(0.0, 0.0, 0.0, 0.0))
        )
    return masks, rows


def frame(s: Session, message: str = "") -> dict:
    """The next frame for the session's browser canvas: what changed since the last one (masks
    the table's filter hides are left out, as in the table)."""
    with s.lock:
        c = _canvas(s)
        sent = c.sent
        extra = {"mode": s.mode, "channel": c.channel}
        view = astuple(s.view)
        if view != sent.view:  # e.g. a project's own options: the browser shows them
            extra["view"] = dict(zip(cf.VIEW_KEYS, view, strict=True))
            sent.view = view
        if s.image is None:
            return cf.frame(sent, image=None, image_key=None, message=message, extra=extra)
        p = s.prompt
        size = s.image.shape[:2]
        shown_hw = cf.prompt_size(size, c.scale)
        key = (image_key(s), tuple(p.points), tuple(p.labels), p.box, p.corner, id(p.prediction), p.pick, shown_hw)
        if key == sent.prompt_key and sent.image_key == key[0]:
            prompt = cf.UNCHANGED  # (a select, a paint, a view change: no candidate to encode again)
        else:
            # only the shown candidate, upscaled straight to the size the screen shows
            mask = p.mask_at(shown_hw) if p.prediction is not None else None
            prompt = cf.prompt_message(p.points, p.labels, p.box, mask, size, corner=p.corner)
            sent.prompt_key = key
        preview, preview_rows = _preview(s) if s.preview else ([], [])
        doc = SimpleNamespace(
            annotations=views.shown(s),
            selection=s.doc.selection if s.doc is not None else (),
            cursor=s.cursor,
            preview_rows=preview_rows,
        )
        return cf.frame(
            sent,
            image=s.image,
            image_key=image_key(s),
            doc=doc,
            classes=class_list(s),
            prompt=prompt,
            message=message,
            extra=extra,
            preview=preview,
        )


def sid_for_channel(sessions, channel) -> str | None:
    """The session id whose browser canvas has ``channel``, among (sid, session) pairs."""
    if not isinstance(channel, str) or not channel:
        return None
    for sid, s in sessions:
        if s is not None and s.canvas is not None and secrets.compare_digest(s.canvas.channel, channel):
            return sid
    return None


def image_for_key(sessions, key: str):
    """The image a browser asks a crop of, found by its key among the live sessions."""
    for s in sessions:
        c = None if s is None else s.canvas
        if c is not None and c.key == key and c.image is not None:
            return c.image
    return None


def apply(ctx: Context, s: Session, message, label: str | None = None) -> str:
    """Apply the browser's new actions in order; returns what the last one said, and why any
    was refused (one refused action does not drop the ones after it)."""
    c = _canvas(s)
    try:
        reported = cf.reported_view(message)
        scale = cf.reported_scale(message)
    except ValueError:
        reported = scale = None  # (the actions are checked below, with a message)
    if scale is not None:  # the zoom: the candidate is sent at what the screen shows
        c.scale = scale
    if reported is not None:  # the browser's own view options (changed there, no request)
        views.set_options(s, **reported)
        c.sent.view = astuple(s.view)
    try:
        actions = cf.new_actions(message, c.sent)
    except ValueError as e:  # a malformed message: nothing of it is applied
        raise WorkbenchError(f"The canvas sent a message the server cannot read: {e}") from None
    if any(a["type"] in PROMPT_ACTIONS for a in actions):
        # the browser drew these at once: the answer shows the prompt as it is, even if refused
        c.sent.prompt_key = None
    if not actions:  # (the page's sync after a direct call, a view report): as last said
        return c.said
    said, errors = "", []
    for a in actions:
        c.sent.last_action = a["seq"]  # the frame that answers acknowledges it, refused or not
        try:
            said = _one(ctx, s, a, label) or said
        except WorkbenchError as e:
            errors.append(str(e))
    c.said = " ".join([*errors, said] if errors else [said]).strip()
    return c.said


def _one(ctx: Context, s: Session, a: dict, label: str | None) -> str | None:
    kind = a["type"]
    if kind == "point":
        return prompting.point(ctx, s, a["x"], a["y"], a["mode"])
    if kind == "box":
        return prompting.drag_box(ctx, s, *a["box"])
    if kind == "remove_point":
        return prompting.remove_point(ctx, s, a["index"])
    if kind == "clear_prompt":
        return prompting.clear_prompt(s)
    if kind == "accept":
        cls = class_list(s).by_id(a["class_id"]) if a["class_id"] is not None else None
        return prompting.accept(ctx, s, cls.name if cls else label)
    if kind == "select":
        return prompting.click(ctx, s, a["x"], a["y"], "select")
    if kind == "paint":
        return editing.paint(s, a["id"], a["strokes"])
    if kind == "candidate":
        n = len(s.prompt.order)
        if n == 0:
            return None
        return prompting.choose_candidate(s, (s.prompt.choice + 1) % n if a["position"] < 0 else a["position"])
    if kind == "mode":
        return prompting.set_mode(s, a["mode"])
    if kind == "view":
        views.set_options(s, **a["view"])
        c = _canvas(s)
        c.sent.view = astuple(s.view)
        return views.coverage_text(s) if s.view.coverage and s.doc is not None else None
    if kind == "undo":
        return editing.undo(ctx, s)
    if kind == "redo":
        return editing.redo(s)
    if kind == "delete":
        return editing.delete(s)
    return None  # scale: the answer re-sends the candidate at the new zoom; resync: everything
