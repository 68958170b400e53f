"""The left column: the annotation canvas (``component.AnnotationCanvas``, drawn in the
browser) with the message, SAM's candidates, the label, accept / clear, undo / redo, and
the image navigation row shown in a project.

The canvas's own toolbar holds the prompt modes, brush and eraser, view options and zoom;
its actions (points, boxes, strokes, ...) reach the Workbench straight from its script
(``Workbench.canvas_direct``, a server function), and then through one event that updates the
rest of the page (``Workbench.canvas_actions``; also the path for what the direct call could
not take); each action has an API twin (``/click``, ``/drag_box``, ``/remove_point``, ``/paint``,
``/set_mode``, ``/set_view``) taking the hidden inputs of ``api``. The rest of the page
knows the canvas only as ``Outputs.canvas``, which shows ``View.frame``. The navigation
row's events are project events, wired in ``project_tab``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.api import ApiInputs
from annotator.app.ui.canvas.component import AnnotationCanvas
from annotator.app.ui.common import QUICK, Outputs, action, model_events, sid, user_errors
from annotator.app.workbench import Workbench

# the drawing area: what the window leaves after the title row, the toolbar and the controls
# below it (all of them visible without scrolling at 1366x768)
CANVAS_HEIGHT = "max(320px, calc(100vh - 290px))"


@dataclass(frozen=True, eq=False)
class LeftColumn:
    canvas: AnnotationCanvas
    message: gr.Textbox
    nav_row: gr.Row
    prev_image: gr.Button
    done: gr.Button
    next_image: gr.Button
    candidates: gr.Radio
    label: gr.Textbox
    accept: gr.Button
    clear: gr.Button
    undo: gr.Button
    redo: gr.Button


# -- layout ------------------------------------------------------------------------------
def layout(wb: Workbench) -> LeftColumn:
    with gr.Column(scale=7, min_width=600):
        canvas = AnnotationCanvas(
            elem_id="canvas", image_for_key=wb.canvas_image, on_actions=wb.canvas_direct, height=CANVAS_HEIGHT
        )
        with gr.Row(visible=False, equal_height=True, elem_id="image-nav") as nav_row:
            prev_image = gr.Button("◀ Previous image (,)", elem_id="image-prev", size="sm")
            done = gr.Button("✓ Done / pending (D)", elem_id="image-done", size="sm")
            next_image = gr.Button("Next image (.) ▶", elem_id="image-next", size="sm")
        with gr.Row(equal_height=True, elem_id="prompt-row"):
            candidates = gr.Radio(
                [], label="SAM's candidates (Tab, or the same pixel again)", elem_id="candidates", scale=5
            )
            label = gr.Textbox(
                "object", label="Label / class (1-9)", elem_id="label", scale=1, min_width=150, max_lines=1
            )
            with gr.Column(scale=1, min_width=110):
                accept = gr.Button("Accept (Enter)", variant="primary", elem_id="accept", size="sm")
                clear = gr.Button("Clear (Esc)", elem_id="clear", size="sm")
            with gr.Column(scale=1, min_width=110):
                undo = gr.Button("↶ Undo (Ctrl+Z)", elem_id="undo", size="sm")
                redo = gr.Button("↷ Redo (Ctrl+Y)", elem_id="redo", size="sm")
        message = gr.Textbox(
            "", label="Message", show_label=False, interactive=False, container=False, elem_id="message"
        )
    return LeftColumn(
        canvas=canvas,
        message=message,
        nav_row=nav_row,
        prev_image=prev_image,
        done=done,
        next_image=next_image,
        candidates=candidates,
        label=label,
        accept=accept,
        clear=clear,
        undo=undo,
        redo=redo,
    )


# -- wiring ------------------------------------------------------------------------------
def wire(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    wire_canvas(col, out, api, wb)
    _wire_prompt(col, out, api, wb)
    _wire_view_options(out, api, wb)


def wire_canvas(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    """Every action of the canvas in the model events' group; one session's actions run in
    the order they came (its lock is ordered), and the browser re-sends what is not
    acknowledged yet, so none is lost; and the API twins."""
    model = model_events(wb)

    @user_errors
    def on_canvas(message, text, request: gr.Request):
        return out.show(wb.canvas_actions(sid(request), message, text))

    col.canvas.input(
        on_canvas,
        [col.canvas, col.label],
        out.view,
        trigger_mode="multiple",
        show_progress="hidden",
        api_name="canvas_actions",
        **model,
    )

    @user_errors
    def on_api_click(x, y, mode_value, request: gr.Request):
        return out.show(wb.click(sid(request), float(x), float(y), mode_value))

    api.click.click(on_api_click, [api.x, api.y, api.mode], out.view, api_name="click", **model)

    @user_errors
    def on_api_box(x0, y0, x1, y1, request: gr.Request):
        return out.show(wb.drag_box(sid(request), float(x0), float(y0), float(x1), float(y1)))

    api.box.click(on_api_box, [api.x, api.y, api.x1, api.y1], out.view, api_name="drag_box", **model)

    @user_errors
    def on_api_remove_point(index, request: gr.Request):
        return out.show(wb.remove_point(sid(request), int(index)))

    api.remove_point.click(on_api_remove_point, [api.mask_id], out.view, api_name="remove_point", **model)

    @user_errors
    def on_api_paint(ann_id, strokes, request: gr.Request):
        return out.show(wb.paint(sid(request), int(ann_id), strokes))

    api.paint.click(on_api_paint, [api.mask_id, api.strokes], out.view, api_name="paint", **QUICK)


def _wire_prompt(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    @user_errors
    def on_mode(mode_value, request: gr.Request):
        return out.show(wb.set_mode(sid(request), mode_value))

    api.set_mode.click(on_mode, [api.mode], out.view, api_name="set_mode", **QUICK)

    @user_errors
    def on_candidate(position, request: gr.Request):
        if position is None:
            return out.show(wb.resend(sid(request)))
        return out.show(wb.choose_candidate(sid(request), int(position)))

    col.candidates.input(on_candidate, [col.candidates], out.view, show_progress="hidden", api_name="choose_candidate")

    @user_errors
    def on_accept(text, request: gr.Request):
        v = wb.accept(sid(request), text)
        return {**out.show(v), out.mode: v.mode}  # the mode the next object starts in (positive, or box)

    col.accept.click(on_accept, [col.label], [*out.view, out.mode], api_name="accept", **QUICK)
    col.label.submit(on_accept, [col.label], [*out.view, out.mode], api_visibility="private", **QUICK)
    # undo may re-run the model (the last prompt point), so it queues with the clicks
    col.undo.click(action(wb.undo, out), None, out.view, **model_events(wb), api_name="undo", **QUICK)
    for button, method in ((col.clear, wb.clear_prompt), (col.redo, wb.redo)):
        button.click(action(method, out), None, out.view, api_name=method.__name__, **QUICK)


def _wire_view_options(out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    """``/set_view``: the page's canvas draws its view options itself and reports them with
    its actions; API clients set them here."""

    @user_errors
    def on_view(a, o, only, cov, request: gr.Request):
        return out.show(wb.set_view(sid(request), a, o, only, cov))

    api.view.click(on_view, out.options, out.view, api_name="set_view", **QUICK)
