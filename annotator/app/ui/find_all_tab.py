"""The Find all tab (SAM 3): every instance of a noun phrase and/or of exemplar boxes drawn on
the canvas, as pending masks labelled with the text, reviewed like any others (Y/X/J/K)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.common import MODEL, Outputs, sid, user_errors
from annotator.app.workbench import Workbench


@dataclass(frozen=True, eq=False)
class FindAllTab:
    text: gr.Textbox
    threshold: gr.Slider
    exemplar: gr.Radio
    run: gr.Button


def layout(wb: Workbench) -> FindAllTab:
    with gr.Tab("Find all", id="find-all"):
        gr.Markdown(
            "Every instance of a concept, with **SAM 3** (`annotator serve --model sam3`): type "
            "a noun phrase, and/or drag a box on the canvas around one example "
            "(positive) or around something it must not find (negative). The masks come as "
            "pending, labelled with the text, best first: review them with Y / X / J / K."
            + ("" if wb.info.concepts else f"\n\n*This server runs {wb.info.model_tag}, which cannot find concepts.*")
        )
        text = gr.Textbox("", label="Concept (a noun phrase, e.g. car, red apple)", elem_id="find-text", max_lines=1)
        threshold = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Score threshold", elem_id="find-threshold")
        exemplar = gr.Radio(
            [
                ("No exemplar box", "none"),
                ("The drawn box is an example", "positive"),
                ("The drawn box is NOT an example", "negative"),
            ],
            value="none",
            label="Exemplar box",
            elem_id="find-exemplar",
        )
        run = gr.Button("Find all", variant="primary", elem_id="find-all", size="sm")
    return FindAllTab(text=text, threshold=threshold, exemplar=exemplar, run=run)


def wire(tab: FindAllTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_find_all(text, threshold, exemplar, request: gr.Request):
        return out.show(
            wb.find_all(sid(request), text or None, threshold=float(threshold), exemplar=exemplar or "none")
        )

    inputs = [tab.text, tab.threshold, tab.exemplar]
    tab.run.click(
        on_find_all,
        inputs,
        out.view,
        concurrency_limit=1,
        concurrency_id=MODEL,
        show_progress="full",
        api_name="find_all",
    )
    tab.text.submit(
        on_find_all,
        inputs,
        out.view,
        concurrency_limit=1,
        concurrency_id=MODEL,
        show_progress="full",
        api_visibility="private",
    )
