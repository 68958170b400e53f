"""The hidden API-only twins of events ``gradio_client`` cannot drive (the canvas's own
actions, a click on a table row) or that take hidden values (a mode, view options or a
filter without the page's controls). Not shown in the page.

Only the components are made here; each twin is wired beside the page event it mirrors,
with the same handler (``/click`` in ``canvas``, ``/select_mask`` in ``masks_tab``, ...), so
both keep one concurrency group.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

MODE_CHOICES = [
    ("Positive point", "positive"),
    ("Negative point", "negative"),
    ("Box, 2 clicks", "box"),
    ("Select", "select"),
]


@dataclass(frozen=True, eq=False)
class ApiInputs:
    x: gr.Number
    y: gr.Number
    x1: gr.Number
    y1: gr.Number
    mask_id: gr.Number
    strokes: gr.JSON
    mode: gr.Radio  # /click's mode; also what /accept says the next object starts in
    alpha: gr.Slider  # /set_view's options (the page's canvas has its own)
    outlines: gr.Checkbox
    only_selected: gr.Checkbox
    coverage: gr.Checkbox
    click: gr.Button  # /click
    box: gr.Button  # /drag_box
    remove_point: gr.Button  # /remove_point
    paint: gr.Button  # /paint
    set_mode: gr.Button  # /set_mode
    select: gr.Button  # /select_mask
    table: gr.Button  # /masks
    filter: gr.Button  # /set_filter
    view: gr.Button  # /set_view
    position: gr.Number
    go: gr.Button  # /go_to_image
    progress: gr.Button  # /progress


def layout() -> ApiInputs:
    with gr.Row(visible=False):
        return ApiInputs(
            x=gr.Number(0, label="x (image pixels)"),
            y=gr.Number(0, label="y (image pixels)"),
            x1=gr.Number(0, label="x1 (image pixels)"),
            y1=gr.Number(0, label="y1 (image pixels)"),
            mask_id=gr.Number(0, label="mask id or point index", precision=0),
            strokes=gr.JSON(None, label="strokes [{points, radius, erase}]"),
            mode=gr.Radio(MODE_CHOICES, value="positive", label="Mode"),
            alpha=gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Mask opacity"),
            outlines=gr.Checkbox(True, label="Outlines"),
            only_selected=gr.Checkbox(False, label="Only selected"),
            coverage=gr.Checkbox(False, label="Coverage map"),
            click=gr.Button("click"),
            box=gr.Button("box"),
            remove_point=gr.Button("remove point"),
            paint=gr.Button("paint"),
            set_mode=gr.Button("set mode"),
            select=gr.Button("select mask"),
            table=gr.Button("masks"),
            filter=gr.Button("filter"),
            view=gr.Button("view"),
            position=gr.Number(0, label="image position (0-based)", precision=0),
            go=gr.Button("go to image"),
            progress=gr.Button("progress"),
        )
