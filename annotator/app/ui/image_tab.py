"""The Image tab: upload or paste an image, or pick an example; the help text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from annotator.app.ui.common import Outputs, model_events, read_by_the_app, sid, static_text, user_errors
from annotator.app.workbench import Workbench
from annotator.limits import Limits


@dataclass(frozen=True, eq=False)
class ImageTab:
    upload: gr.Image
    examples: gr.Dataset


def upload_limit_text(limits: Limits) -> str:
    """What a user is told of the upload limit before Gradio refuses a larger file (HTTP 413
    with its own wording): the size and the flag that sets it."""
    return f"up to {limits.max_upload_mb:g} MB a file (--max-upload-mb, ANNOTATOR_MAX_UPLOAD_MB)"


def layout(examples: list[str], limits: Limits) -> ImageTab:
    with gr.Tab("Image", id="image"):
        upload = read_by_the_app(
            gr.Image(
                None,
                type="filepath",
                sources=["upload", "clipboard"],
                label=f"Upload or paste an image ({upload_limit_text(limits)})",
                elem_id="upload",
                height=220,
            )
        )
        # not gr.Examples: it writes the example into the upload component, and Gradio then
        # keeps a fresh copy of that component per session, without read_by_the_app, so the
        # next upload was read by PIL (a traceback for a non-image). An example is opened by
        # the app's reader like any upload.
        example_list = gr.Dataset(
            components=["textbox"],
            samples=[[e] for e in examples],
            sample_labels=[Path(e).stem for e in examples],
            label="Examples (assets/)",
            elem_id="examples",
            type="index",
            samples_per_page=len(examples) or 1,
        )
        gr.Markdown(static_text("help.md"))
    return ImageTab(upload=upload, examples=example_list)


def wire(tab: ImageTab, out: Outputs, wb: Workbench, examples: list[str]) -> None:
    def open_file(path, request: gr.Request):
        key = sid(request)
        if wb.project_name(key) is not None:  # in a project: it joins the project
            first = wb.add_uploads(key, [path], encode=False, show=True)
        else:
            first = wb.load(key, path)
        # the image shows at once; the embedding follows (the status line shows the timer)
        # (in a project the browser remembers the new image, to reopen it after a reload)
        yield {**out.show(first), out.tabs: gr.Tabs(selected="masks"), out.resume: wb.resume_state(key)}
        yield out.show(wb.encode(key))

    opened = [*out.view, out.tabs, out.resume]

    @user_errors
    def on_upload(path, request: gr.Request):
        if not path:
            return
        yield from open_file(path, request)

    tab.upload.change(
        on_upload,
        [tab.upload],
        opened,
        **model_events(wb),
        show_progress="full",
        show_progress_on=[out.status],
        api_name="upload",
    )

    @user_errors
    def on_example(index, request: gr.Request):
        if index is None:
            return
        yield from open_file(examples[int(index)], request)

    tab.examples.click(
        on_example,
        [tab.examples],
        opened,
        **model_events(wb),
        show_progress="full",
        show_progress_on=[out.status],
        api_visibility="private",
    )
