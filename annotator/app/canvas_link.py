"""The browser canvas's link to a workbench session: its actions as Workbench calls, and the
frames (``annotator.app.canvas_data``) that tell it what changed.

A session keeps one ``BrowserCanvas``: what its browser canvas holds (``Sent``), the
unguessable key of the image shown (the browser fetches full-resolution crops with it) and
the class list. Plain Python, no Gradio.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from types import SimpleNamespace

from annotator.annotations.classes import ClassList
from annotator.app import canvas_data as cd
from annotator.app.state import WorkbenchError


@dataclass
class BrowserCanvas:
    sent: cd.Sent = field(default_factory=cd.Sent)
    image: object = None  # the array the key was made for
    key: str | None = None
    classes: ClassList | None = None


def _state(s) -> BrowserCanvas:
    if s.canvas is None:
        s.canvas = BrowserCanvas()
    return s.canvas


def forget(s) -> None:
    """The browser lost what it had (reload): the next frame sends everything."""
    if s.canvas is not None:
        old = s.canvas.sent
        s.canvas.sent = cd.Sent(last_action=old.last_action, frame=old.frame)  # numbers go on


def classes_of(s) -> ClassList:
    c = _state(s)
    if c.classes is None:
        store = getattr(s.project, "store", None) if s.project is not None else None
        c.classes = store.classes() if store is not None else ClassList()
    return c.classes


def image_key(s) -> str | None:
    c = _state(s)
    if s.image is None:
        return None
    if c.image is not s.image:
        c.image, c.key = s.image, secrets.token_urlsafe(12)
    return c.key


def frame(s, message: str = "") -> dict:
    """The next frame for the session's browser canvas (masks the table filter hides are
    left out, as in the table)."""
    with s.lock:
        c = _state(s)
        if s.image is None:
            return cd.frame(c.sent, image=None, image_key=None, message=message)
        p = s.prompt
        prompt = cd.prompt_message(p.points, p.labels, p.box, p.mask)
        shown = [a for a in s.doc.annotations if s.filter.keeps(a)] if s.doc is not None else []
        doc = SimpleNamespace(annotations=shown, selection=s.doc.selection if s.doc is not None else ())
        return cd.frame(c.sent, image=s.image, image_key=image_key(s), doc=doc, classes=classes_of(s),
                        prompt=prompt, message=message)


def image_for_key(sessions, key: str):
    """The image a browser asks a crop of, found by its key among the live sessions."""
    for s in sessions:
        c = s.canvas
        if c is not None and c.key == key and c.image is not None:
            return c.image
    return None


def apply(wb, sid: str, message, label: str | None = None):
    """Apply the browser's new actions in order; returns the last View (errors become its
    message: one refused action does not drop the ones after it)."""
    s = wb.session(sid)
    c = _state(s)
    view, errors = None, []
    for a in cd.new_actions(message, c.sent):
        c.sent.last_action = a["seq"]  # before: the frame the action's View carries acknowledges it
        try:
            view = _one(wb, sid, s, a, label)
        except WorkbenchError as e:
            errors.append(str(e))
    if view is None or errors:  # a View all the same: its frame acknowledges the actions
        view = wb._act(sid, lambda _s: " ".join(errors))
    return view


def _one(wb, sid, s, a, label):
    kind = a["type"]
    if kind == "point":
        return wb.click(sid, a["x"], a["y"], "positive" if a["positive"] else "negative")
    if kind == "box":
        return wb.drag_box(sid, *a["box"])
    if kind == "remove_point":
        return wb.remove_point(sid, a["index"])
    if kind == "clear_prompt":
        return wb.clear_prompt(sid)
    if kind == "accept":
        classes = classes_of(s)
        cls = classes.by_id(a["class_id"]) if a["class_id"] is not None else None
        name = cls.name if cls else ((label or "").strip() or None)
        if name and name not in classes:  # a typed label adds a class (in the accept's frame)
            s.canvas.classes = classes.ensure(name)
        try:
            view = wb.accept(sid, name)
        except Exception:
            s.canvas.classes = classes
            raise
        store = getattr(s.project, "store", None) if s.project is not None else None
        if store is not None and s.canvas.classes is not classes:
            store.save_classes(s.canvas.classes)
        return view
    if kind == "select":
        return wb.click(sid, a["x"], a["y"], "select")
    if kind == "paint":
        return wb.paint(sid, a["id"], a["strokes"])
    if kind == "candidate":
        n = len(s.prompt.order)
        if n == 0:
            return None
        pos = (s.prompt.choice + 1) % n if a["position"] < 0 else a["position"]
        return wb.choose_candidate(sid, pos)
    if kind in ("undo", "redo", "delete"):
        return getattr(wb, kind)(sid)
    return None
