"""The hidden API-only twins of events ``gradio_client`` cannot drive (``.select``: a click
on the canvas or a table row) or that take hidden values (a view or filter without the
page's controls). Not shown in the page.

Only the components are made here; each twin is wired beside the page event it mirrors,
with the same handler (``/click`` in ``canvas``, ``/select_mask`` in ``masks_tab``, ...), so
both keep one concurrency group.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass(frozen=True, eq=False)
class ApiInputs:
    x: gr.Number
    y: gr.Number
    mask_id: gr.Number
    click: gr.Button  # /click
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
            mask_id=gr.Number(0, label="mask id", precision=0),
            click=gr.Button("click"),
            select=gr.Button("select mask"),
            table=gr.Button("masks"),
            filter=gr.Button("filter"),
            view=gr.Button("view"),
            position=gr.Number(0, label="image position (0-based)", precision=0),
            go=gr.Button("go to image"),
            progress=gr.Button("progress"),
        )
