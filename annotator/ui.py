"""The Gradio app. This module only declares layout and wires events to plain functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from annotator.backends import BackendInfo
from annotator.sessions import SessionStore


@dataclass
class Session:
    image: np.ndarray | None = None
    embedding: object | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


class AnnotatorApp:
    """Owns the model handle and the per-session store; its methods are the UI's logic."""

    def __init__(self, segmenter, info: BackendInfo, max_sessions: int = 64):
        self.segmenter = segmenter
        self.info = info
        self.sessions: SessionStore[Session] = SessionStore(Session, max_sessions=max_sessions)

    def status(self, sess: Session) -> str:
        cached = "embedding cached" if sess.embedding is not None else "no image"
        return f"{self.info.status} · {cached}"

    def set_image(self, session_id: str, image: np.ndarray):
        sess = self.sessions.get(session_id)
        sess.image, sess.points, sess.labels = image, [], []
        sess.embedding = self.segmenter.embed(image) if image is not None else None
        return image, self.status(sess)

    def add_point(self, session_id: str, x: float, y: float, positive: bool = True):
        sess = self.sessions.get(session_id)
        if sess.embedding is None:
            raise gr.Error("Upload an image first.")
        sess.points.append((float(x), float(y)))
        sess.labels.append(1 if positive else 0)
        pred = self.segmenter.predict(np.array(sess.points), np.array(sess.labels),
                                      embedding=sess.embedding)
        mask = pred.masks[pred.best()]
        out = sess.image.copy()
        out[mask] = (0.5 * out[mask] + 0.5 * np.array([30, 144, 255])).astype(np.uint8)
        return out, self.status(sess)


def build_app(segmenter, info: BackendInfo) -> gr.Blocks:
    app = AnnotatorApp(segmenter, info)
    with gr.Blocks(title="annotator") as demo:
        status = gr.Textbox(info.status, label="Status", interactive=False, elem_id="status")
        positive = gr.Checkbox(True, label="Positive point")
        canvas = gr.Image(type="numpy", sources=["upload", "clipboard"], format="jpeg",
                          label="Image: upload, then click", elem_id="canvas")

        def on_upload(image, request: gr.Request):
            return app.set_image(request.session_hash, image)

        def on_click(pos, evt: gr.SelectData, request: gr.Request):
            x, y = evt.index
            return app.add_point(request.session_hash, x, y, pos)

        canvas.upload(on_upload, [canvas], [canvas, status], concurrency_id="model")
        canvas.select(on_click, [positive], [canvas, status], trigger_mode="multiple",
                      show_progress="minimal", concurrency_limit=1, concurrency_id="model")
        def on_unload(request: gr.Request):
            app.sessions.free(request.session_hash)

        demo.unload(on_unload)
    demo.annotator = app
    return demo
