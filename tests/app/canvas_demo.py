"""A small Blocks app around the annotation canvas, for the browser tests.

It segments without a model (a point makes a disc, a box fills the box, negative points cut
discs out), so the tests measure the canvas, not SAM. Per-session data lives in a store
keyed by the session hash, owned by the app built here.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

import cv2
import gradio as gr
import numpy as np

from annotator.annotations.classes import ClassList
from annotator.annotations.document import AnnotationDocument
from annotator.app import canvas_frames as cd
from annotator.app.ui.canvas.component import AnnotationCanvas

DISC = 40  # radius of the mask a point makes, image pixels


@dataclass
class DemoSession:
    image: np.ndarray
    key: str
    doc: AnnotationDocument
    classes: ClassList
    sent: cd.Sent = field(default_factory=cd.Sent)
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    box: list | None = None
    mask: np.ndarray | None = None
    log: list = field(default_factory=list)  # every action applied, for the tests
    message: str = ""
    scale: float | None = None  # what the canvas reports it shows (the candidate is sent at that)


def fake_segment(shape, points, labels, box) -> np.ndarray | None:
    h, w = shape
    m = np.zeros((h, w), np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m[y0:y1, x0:x1] = 1
    for (x, y), lb in zip(points, labels, strict=True):
        if lb:
            cv2.circle(m, (int(round(x)), int(round(y))), DISC, 1, -1)
    for (x, y), lb in zip(points, labels, strict=True):
        if not lb:
            cv2.circle(m, (int(round(x)), int(round(y))), DISC // 2, 0, -1)
    return m.astype(bool) if m.any() else None


class Demo:
    def __init__(self, image: np.ndarray, classes: ClassList):
        self.image, self.classes = image, classes
        self.sessions: dict[str, DemoSession] = {}
        self.lock = threading.Lock()

    def session(self, sid: str) -> DemoSession:
        with self.lock:
            if sid not in self.sessions:
                h, w = self.image.shape[:2]
                self.sessions[sid] = DemoSession(
                    self.image, secrets.token_urlsafe(12), AnnotationDocument(h, w), self.classes
                )
            return self.sessions[sid]

    def image_for_key(self, key: str):
        with self.lock:
            return next((s.image for s in self.sessions.values() if s.key == key), None)

    def apply(self, s: DemoSession, a: dict) -> None:
        kind = a["type"]
        if kind == "point":
            if a["mode"] == "box":  # (box mode's two clicks: not what these tests drive)
                raise ValueError("the demo takes boxes as drags")
            s.points.append((a["x"], a["y"]))
            s.labels.append(1 if a["mode"] == "positive" else 0)
        elif kind == "box":
            s.box = a["box"]
        elif kind == "remove_point":
            if 0 <= a["index"] < len(s.points):
                del s.points[a["index"]], s.labels[a["index"]]
        elif kind == "clear_prompt":
            s.points, s.labels, s.box = [], [], None
        elif kind == "accept":
            if s.mask is not None:
                cls = s.classes.by_id(a["class_id"]) if a["class_id"] is not None else None
                s.doc.add(s.mask, label=cls.name if cls else None)
                s.points, s.labels, s.box = [], [], None
        elif kind == "select":
            hit = s.doc.pick(a["x"], a["y"])
            if hit is None:
                s.doc.clear_selection()
            else:
                s.doc.select([hit], "replace")
        elif kind == "paint":
            s.doc.paint(a["id"], a["strokes"])
        elif kind == "undo":
            s.doc.undo()
        elif kind == "redo":
            s.doc.redo()
        elif kind == "delete":
            s.doc.delete()
        if kind in ("point", "box", "remove_point", "clear_prompt", "accept"):
            s.mask = fake_segment(s.doc.size, s.points, s.labels, s.box)

    def frame(self, s: DemoSession) -> dict:
        mask = s.mask
        if mask is not None:  # at the screen's scale, as the app sends it
            h, w = cd.prompt_size(mask.shape, s.scale)
            mask = cv2.resize(mask.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        prompt = cd.prompt_message(s.points, s.labels, s.box, mask, s.image.shape[:2])
        return cd.frame(
            s.sent, image=s.image, image_key=s.key, doc=s.doc, classes=s.classes, prompt=prompt, message=s.message
        )

    def on_button(self, kind: str):
        """A page button (accept with the label, undo): applied like a canvas action."""

        def run(text, request: gr.Request):
            s = self.session(request.session_hash)
            cls = s.classes.by_name(text)
            self.apply(s, {"type": kind, "class_id": cls.id if cls else None})
            s.log.append({"type": kind, "label": text})
            return self.frame(s)

        return run

    def on_load(self, request: gr.Request):
        s = self.session(request.session_hash)
        s.sent = cd.Sent()
        return self.frame(s)

    def on_input(self, message, request: gr.Request):
        s = self.session(request.session_hash)
        try:
            s.scale = cd.reported_scale(message) or s.scale
            for a in cd.new_actions(message, s.sent):
                try:
                    self.apply(s, a)
                    s.message = ""
                except (ValueError, KeyError) as e:
                    s.message = str(e)
                s.log.append(a)
                s.sent.last_action = a["seq"]
        except ValueError as e:
            s.message = f"bad canvas message: {e}"
        return self.frame(s)


def build_demo(image: np.ndarray, classes: ClassList | None = None, height="600px"):
    demo_state = Demo(image, classes if classes is not None else ClassList())
    with gr.Blocks() as blocks:
        canvas = AnnotationCanvas(elem_id="canvas", image_for_key=demo_state.image_for_key, height=height)
        with gr.Row():
            label = gr.Textbox("", label="Label", elem_id="label")
            accept = gr.Button("Accept", elem_id="accept")
            undo = gr.Button("Undo", elem_id="undo")
        canvas.input(
            demo_state.on_input,
            canvas,
            canvas,
            trigger_mode="multiple",
            show_progress="hidden",
            concurrency_limit=1,
            concurrency_id="canvas",
        )
        # the page's buttons answer with a frame too, in the canvas's queue
        for button, kind in ((accept, "accept"), (undo, "undo")):
            button.click(demo_state.on_button(kind), label, canvas, concurrency_limit=1, concurrency_id="canvas")
        blocks.load(demo_state.on_load, None, canvas, show_progress="hidden")
    return blocks, demo_state
