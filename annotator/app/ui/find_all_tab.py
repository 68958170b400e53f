"""The Find all tab (SAM 3): every instance of a noun phrase and/or of exemplar boxes drawn on
the canvas, as pending masks labelled with the text, reviewed like any others (Y/X/J/K)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.common import EVERYTHING, Outputs, model_events, sid, user_errors
from annotator.app.workbench import Workbench


@dataclass(frozen=True, eq=False)
class FindAllTab:
    text: gr.Textbox
    threshold: gr.Slider
    exemplar: gr.Radio
    run: gr.Button
    run_project: gr.Button
    cancel_project: gr.Button
    project_progress: gr.Textbox


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
        gr.Markdown(
            "**In every image of the open project** (the text only): each image's instances are "
            "saved as pending masks labelled with the text as it goes; masks already there, "
            "accepted or not, stay as they are. Cancel stops after the current image and keeps "
            "what was found; running it again goes on with the images not yet searched for "
            "that text (images marked done are skipped)."
        )
        with gr.Row():
            run_project = gr.Button("Find all in every image", variant="primary", elem_id="find-all-project", size="sm")
            cancel_project = gr.Button("Cancel", variant="stop", elem_id="cancel-find-all", size="sm")
        project_progress = gr.Textbox("", label="Progress", interactive=False, lines=2, elem_id="find-all-progress")
    return FindAllTab(
        text=text,
        threshold=threshold,
        exemplar=exemplar,
        run=run,
        run_project=run_project,
        cancel_project=cancel_project,
        project_progress=project_progress,
    )


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
        **model_events(wb),
        show_progress="full",
        api_name="find_all",
    )
    tab.text.submit(
        on_find_all,
        inputs,
        out.view,
        **model_events(wb),
        show_progress="full",
        api_visibility="private",
    )

    _wire_project(tab, out, wb)


def _wire_project(tab: FindAllTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_find_all_in_project(text, threshold, request: gr.Request, progress=gr.Progress()):
        progress(0.0, desc="Find all: first image")
        for step in wb.find_all_in_project(sid(request), text or None, threshold=float(threshold)):
            if not step.final and step.total:
                eta = f", ETA {step.eta_s:.0f} s" if step.eta_s is not None else ""
                progress((step.done, step.total), desc=f"Find all{eta}", unit="images")
            yield {**out.show(step.view), tab.project_progress: step.view.message}

    # like segment everything: the run takes the model image by image (Workbench.model_lock),
    # so clicks are answered while it goes, and the canvas stays visible
    tab.run_project.click(
        on_find_all_in_project,
        [tab.text, tab.threshold],
        [*out.view, tab.project_progress],
        concurrency_limit=2,
        concurrency_id=EVERYTHING,
        show_progress="full",
        show_progress_on=[tab.project_progress],
        api_name="find_all_in_project",
    )

    def on_cancel(request: gr.Request):
        wb.cancel_find_all(sid(request))

    # in no group: it must run while a run is going
    tab.cancel_project.click(
        on_cancel, None, None, concurrency_limit=None, show_progress="hidden", api_name="cancel_find_all"
    )
