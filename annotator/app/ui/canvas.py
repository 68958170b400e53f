"""The left column: the canvas with its mode, message, candidates, label, accept / clear,
undo / redo and view options, and the image navigation row shown in a project.

The canvas component and its events live in ``canvas_component`` and ``wire_canvas``
alone (a click on it and its API twin ``/click``); the rest of the page knows it only as
``Outputs.canvas``, which shows ``View.canvas``. The navigation row's events are project
events, wired in ``project_tab``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.api import ApiInputs
from annotator.app.ui.common import QUICK, Outputs, action, model_events, sid, user_errors
from annotator.app.workbench import Workbench

MODE_CHOICES = [
    ("Positive point (P)", "positive"),
    ("Negative (N)", "negative"),
    ("Box, 2 clicks (B)", "box"),
    ("Select (S)", "select"),
]


@dataclass(frozen=True, eq=False)
class LeftColumn:
    mode: gr.Radio
    canvas: gr.Image
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
    alpha: gr.Slider
    outlines: gr.Checkbox
    only_selected: gr.Checkbox
    coverage: gr.Checkbox

    @property
    def options(self) -> list:
        return [self.alpha, self.outlines, self.only_selected, self.coverage]


# -- layout ------------------------------------------------------------------------------
def canvas_component() -> gr.Image:
    """The image the masks are drawn on, clicked to prompt (``evt.index``: image pixels)."""
    return gr.Image(
        None,
        format="jpeg",
        interactive=False,
        label="Canvas",
        show_label=False,
        elem_id="canvas",
        height="60vh",
        buttons=["fullscreen"],
        placeholder="Upload an image on the right, paste one, or pick an example.",
    )


def layout() -> LeftColumn:
    with gr.Column(scale=6, min_width=520):
        mode = gr.Radio(MODE_CHOICES, value="positive", label="Mode", show_label=False, container=False, elem_id="mode")
        canvas = canvas_component()
        message = gr.Textbox(
            "", label="Message", show_label=False, interactive=False, container=False, elem_id="message"
        )
        with gr.Row(visible=False, equal_height=True, elem_id="image-nav") as nav_row:
            prev_image = gr.Button("◀ Previous image (,)", elem_id="image-prev", size="sm")
            done = gr.Button("✓ Done / pending (D)", elem_id="image-done", size="sm")
            next_image = gr.Button("Next image (.) ▶", elem_id="image-next", size="sm")
        with gr.Row(equal_height=True):
            candidates = gr.Radio([], label="SAM's candidates (same pixel again cycles)", elem_id="candidates", scale=4)
            label = gr.Textbox("object", label="Label", elem_id="label", scale=2, max_lines=1)
            with gr.Column(scale=1, min_width=120):
                accept = gr.Button("Accept (Enter)", variant="primary", elem_id="accept", size="sm")
                clear = gr.Button("Clear (Esc)", elem_id="clear", size="sm")
            with gr.Column(scale=1, min_width=120):
                undo = gr.Button("↶ Undo (Ctrl+Z)", elem_id="undo", size="sm")
                redo = gr.Button("↷ Redo (Ctrl+Y)", elem_id="redo", size="sm")
        with gr.Row(equal_height=True):
            alpha = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Mask opacity", elem_id="alpha", scale=3)
            outlines = gr.Checkbox(True, label="Outlines", elem_id="outlines", scale=1)
            only_selected = gr.Checkbox(False, label="Only selected", elem_id="only-selected", scale=1)
            coverage = gr.Checkbox(False, label="Coverage map", elem_id="coverage", scale=1)
    return LeftColumn(
        mode=mode,
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
        alpha=alpha,
        outlines=outlines,
        only_selected=only_selected,
        coverage=coverage,
    )


# -- wiring ------------------------------------------------------------------------------
def wire(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    wire_canvas(col, out, api, wb)
    _wire_prompt(col, out, wb)
    _wire_view_options(col, out, api, wb)


def wire_canvas(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    """A click on the canvas prompts in the current mode; ``/click`` takes image pixels."""

    @user_errors
    def on_canvas_select(mode_value, evt: gr.SelectData, request: gr.Request):
        x, y = evt.index
        return out.show(wb.click_display(sid(request), x, y, mode_value))

    # fast clicks are queued, never dropped, and run in order with the other model events
    col.canvas.select(
        on_canvas_select,
        [col.mode],
        out.view,
        trigger_mode="multiple",
        show_progress="minimal",
        **model_events(wb),
        api_visibility="private",
    )

    @user_errors
    def on_api_click(x, y, mode_value, request: gr.Request):
        return out.show(wb.click(sid(request), float(x), float(y), mode_value))

    api.click.click(on_api_click, [api.x, api.y, col.mode], out.view, **model_events(wb), api_name="click")


def _wire_prompt(col: LeftColumn, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_mode(mode_value, request: gr.Request):
        return out.show(wb.set_mode(sid(request), mode_value))

    col.mode.input(on_mode, [col.mode], out.view, show_progress="hidden", api_name="set_mode")

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


def _wire_view_options(col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    @user_errors
    def on_view(a, o, only, cov, request: gr.Request):
        return out.show(wb.set_view(sid(request), a, o, only, cov))

    col.alpha.release(on_view, col.options, out.view, show_progress="hidden", api_visibility="private")
    for comp in (col.outlines, col.only_selected, col.coverage):
        comp.input(on_view, col.options, out.view, show_progress="hidden", api_visibility="private")
    api.view.click(on_view, col.options, out.view, api_name="set_view", **QUICK)
