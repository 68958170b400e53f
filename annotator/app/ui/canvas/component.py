"""The annotation canvas: a component of our own on ``gr.HTML`` (no build step).

The browser draws the image, the mask layers and the prompt itself (``canvas.js``), so
zoom, pan, opacity, hiding, outlines, coverage and hover cost no request. The component's
value is a *frame* going to the browser (``annotator.app.canvas_frames.frame``) and a batch
of *actions* coming back from it (``{"kind": "actions", "have": ..., "view": ...,
"actions": [...]}``); listen with ``canvas.input(fn, [canvas, ...], [canvas, ...])`` and
answer with the next frame. Two server functions the browser calls outside Gradio's queue:
``crop_image`` for full-resolution crops when zoomed past the view scale (``image_for_key``:
key -> RGB array or None finds the image, keys being unguessable tokens), and
``canvas_actions`` for its actions (``on_actions``: message -> the next frame, or None when
the message's channel is unknown; the browser then triggers the ``input`` event instead).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from annotator.app import canvas_frames

_HERE = Path(__file__).resolve().parent


def _read(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


class AnnotationCanvas(gr.HTML):
    """The canvas; ``height`` is the drawing area's CSS height (e.g. ``"70vh"`` or 600)."""

    def __init__(
        self,
        value: dict | None = None,
        *,
        image_for_key: Callable[[str], np.ndarray | None] | None = None,
        on_actions: Callable[[dict], dict | None] | None = None,
        height: int | str = "70vh",
        **kwargs: Any,
    ):
        self._image_for_key = image_for_key
        self._on_actions = on_actions

        def crop_image(args):
            """Full-resolution JPEG crop: args = [key, x0, y0, x1, y1, scale] from the browser."""
            return self._crop(args)

        def canvas_actions(message):
            """The canvas's actions: the message from the browser (its one argument arrives as
            it is); the next frame or None."""
            if self._on_actions is None or not isinstance(message, dict):
                return None
            return self._on_actions(message)

        super().__init__(
            value=value,
            html_template=_read("template.html"),
            css_template=_read("canvas.css"),
            js_on_load=_read("canvas.js"),
            apply_default_css=False,
            server_functions=[crop_image, canvas_actions],
            height=height,
            **kwargs,
        )

    def _crop(self, args) -> dict | None:
        if not isinstance(args, (list, tuple)) or len(args) != 6 or self._image_for_key is None:
            return None
        key, *numbers = args
        image = self._image_for_key(str(key))
        if image is None:
            return None
        try:
            x0, y0, x1, y1, scale = (float(v) for v in numbers)
            return canvas_frames.crop_jpeg(image, x0, y0, x1, y1, scale)
        except (TypeError, ValueError):
            return None

    def preprocess(self, payload: Any) -> Any:
        """The browser's message as sent (``canvas_frames.new_actions`` checks it)."""
        return payload

    def postprocess(self, value: Any) -> Any:
        """A frame dict (or None) goes to the browser as JSON."""
        return value

    def api_info(self) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "canvas frame (to the browser) or actions (from it); see annotator.app.canvas_frames",
        }
