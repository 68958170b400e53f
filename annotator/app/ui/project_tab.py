"""The Project tab: open or create a project, add images (uploads or a server folder), its
image list, the project export; and the image navigation row under the canvas.

A project event shows the new image at once and its embedding after (``then_encode``),
and also updates what the browser keeps to resume, the navigation row, the project list
and the view options the project remembers (``Outputs.project``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.api import ApiInputs
from annotator.app.ui.canvas import LeftColumn
from annotator.app.ui.common import QUICK, Outputs, model_events, sid, user_errors
from annotator.app.ui.image_tab import upload_limit_text
from annotator.app.workbench import COMPUTING, View, Workbench

PROGRESS_HEADERS = ["", "#", "image", "status", "masks", "accepted"]


PROJECT_FORMATS = [
    ("COCO JSON, RLE masks", "coco-rle"),
    ("COCO JSON, polygons", "coco-polygon"),
    ("YOLO segmentation (zip, with images)", "yolo"),
    ("labelme JSON (zip, with images)", "labelme"),
    ("Pascal VOC PNGs (zip, with images)", "voc"),
]


@dataclass(frozen=True, eq=False)
class ProjectTab:
    name: gr.Dropdown
    open: gr.Button
    close: gr.Button
    add_images: gr.File
    folder: gr.Textbox
    recursive: gr.Checkbox
    add_folder: gr.Button
    progress: gr.Dataframe
    export_format: gr.Dropdown
    export: gr.Button
    download: gr.DownloadButton


# -- layout ------------------------------------------------------------------------------
def layout(wb: Workbench) -> ProjectTab:
    with gr.Tab("Project", id="project"):
        gr.Markdown(
            "A **project** keeps many images and saves every edit as you go; "
            "reload the page or restart the server and it reopens here."
        )
        with gr.Row(equal_height=True):
            name = gr.Dropdown(
                wb.project_names(),
                value=None,
                allow_custom_value=True,
                label="Project (pick one, or type a new name)",
                elem_id="project-name",
                scale=3,
            )
            with gr.Column(scale=1, min_width=120):
                open_btn = gr.Button("Open / create", variant="primary", elem_id="open-project", size="sm")
                close_btn = gr.Button("Close project", elem_id="close-project", size="sm")
        add_images = gr.File(
            None,
            file_count="multiple",
            file_types=["image"],
            type="filepath",
            label=f"Add images (several at once; {upload_limit_text(wb.limits)})",
            elem_id="add-images",
            height=120,
        )
        with gr.Row(equal_height=True, visible=bool(wb.folders)):
            folder = gr.Textbox(
                "",
                label="Add a server folder (allowed: " + ", ".join(str(a) for a in wb.folders.allowed) + ")",
                elem_id="folder",
                scale=3,
                max_lines=1,
            )
            recursive = gr.Checkbox(False, label="subfolders", elem_id="recursive", scale=0, min_width=90)
            add_folder = gr.Button("Add folder", elem_id="add-folder", size="sm", scale=1)
        progress = gr.Dataframe(
            headers=PROGRESS_HEADERS,
            value=[],
            interactive=False,
            label="Images (click one to open it)",
            elem_id="progress-table",
            max_height=300,
            wrap=False,
            datatype="str",
        )
        with gr.Row(equal_height=True):
            # every format keeps the project's class ids (COCO category id, YOLO index, VOC value)
            export_format = gr.Dropdown(
                PROJECT_FORMATS, value="coco-rle", label="Export as", elem_id="project-format", scale=2
            )
            export = gr.Button("Prepare project export", elem_id="export-project", size="sm", scale=1)
            download = gr.DownloadButton(
                "Download project export", interactive=False, elem_id="download-project", size="sm", scale=1
            )
    return ProjectTab(
        name=name,
        open=open_btn,
        close=close_btn,
        add_images=add_images,
        folder=folder,
        recursive=recursive,
        add_folder=add_folder,
        progress=progress,
        export_format=export_format,
        export=export,
        download=download,
    )


# -- showing a project's View --------------------------------------------------------------
def show_project(out: Outputs, wb: Workbench, key: str, v: View, full: bool = False) -> dict:
    """The View, and the project's parts of the page; ``full``: a closed project's image
    list is cleared too."""
    name = wb.project_name(key)
    shown = out.show(v)
    if name is None and full:
        shown[out.progress] = []
    opts = v.options
    return {
        **shown,
        out.resume: wb.resume_state(key),
        out.nav_row: gr.Row(visible=name is not None),
        out.project_name: gr.Dropdown(choices=wb.project_names(), value=name),
        out.alpha: opts.alpha,
        out.outlines: opts.outlines,
        out.only_selected: opts.only_selected,
        out.coverage: opts.coverage,
    }


def then_encode(out: Outputs, wb: Workbench, key: str, first: View) -> Iterator[dict]:
    """Show the image at once, then its embedding (as the upload does)."""
    yield show_project(out, wb, key, first)
    if wb.needs_embedding(key):
        done = wb.encode(key)
        done.message = first.message.removesuffix(COMPUTING) + done.message
        # an API client sees only the last yield: repeat the (small) lists, as they are now
        # (not the first yield's: the image may have been marked done meanwhile, and this
        # answer may reach the page after that event's); the status line too
        done.status = wb.status(key)
        if done.table is None and first.table is not None:
            done.table = wb.table(key)
        if done.progress is None and first.progress is not None:
            done.progress = wb.progress_rows(key)
        yield show_project(out, wb, key, done)


# -- wiring ------------------------------------------------------------------------------
def wire(tab: ProjectTab, col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    _wire_open(tab, out, wb)
    _wire_add(tab, out, wb)
    _wire_navigation(tab, col, out, api, wb)
    _wire_export(tab, out, api, wb)


def _wire_open(tab: ProjectTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_open_project(name, request: gr.Request):
        key = sid(request)
        yield from then_encode(out, wb, key, wb.open_project(key, name or "", encode=False))

    tab.open.click(
        on_open_project,
        [tab.name],
        out.project,
        **model_events(wb),
        api_name="open_project",
        **QUICK,
    )
    tab.name.select(
        on_open_project,
        [tab.name],
        out.project,
        **model_events(wb),
        api_visibility="private",
        **QUICK,
    )

    @user_errors
    def on_close_project(request: gr.Request):
        key = sid(request)
        return show_project(out, wb, key, wb.close_project(key), full=True)

    tab.close.click(on_close_project, None, out.project, api_name="close_project", **QUICK)


def _wire_add(tab: ProjectTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_add_images(paths, request: gr.Request):
        if not paths:
            return
        key = sid(request)
        yield from then_encode(out, wb, key, wb.add_uploads(key, paths, encode=False))

    tab.add_images.upload(
        on_add_images,
        [tab.add_images],
        out.project,
        **model_events(wb),
        show_progress="full",
        show_progress_on=[tab.progress],
        api_name="add_images",
    )

    @user_errors
    def on_add_folder(path, sub, request: gr.Request):
        key = sid(request)
        yield from then_encode(out, wb, key, wb.add_folder(key, path, recursive=bool(sub), encode=False))

    tab.add_folder.click(
        on_add_folder,
        [tab.folder, tab.recursive],
        out.project,
        **model_events(wb),
        show_progress="full",
        show_progress_on=[tab.progress],
        api_name="add_folder",
    )


def _wire_navigation(tab: ProjectTab, col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    def go(delta):
        @user_errors
        def run(request: gr.Request):
            key = sid(request)
            yield from then_encode(out, wb, key, wb.step_image(key, delta, encode=False))

        return run

    col.next_image.click(go(1), None, out.project, api_name="next_image", **model_events(wb), **QUICK)
    col.prev_image.click(go(-1), None, out.project, api_name="prev_image", **model_events(wb), **QUICK)

    @user_errors
    def on_go_to(position, request: gr.Request):
        key = sid(request)
        yield from then_encode(out, wb, key, wb.go_to_position(key, int(position), encode=False))

    api.go.click(on_go_to, [api.position], out.project, api_name="go_to_image", **model_events(wb), **QUICK)

    @user_errors
    def on_progress_row(evt: gr.SelectData, request: gr.Request):
        key = sid(request)
        row = evt.row_value
        if not row or row[1] in (None, ""):
            yield show_project(out, wb, key, wb.resend(key))
            return
        yield from then_encode(out, wb, key, wb.go_to_position(key, int(row[1]) - 1, encode=False))

    tab.progress.select(on_progress_row, None, out.project, api_visibility="private", **model_events(wb), **QUICK)

    @user_errors
    def on_done(request: gr.Request):
        return out.show(wb.toggle_done(sid(request)))

    col.done.click(on_done, None, out.view, api_name="toggle_done", **QUICK)


def _wire_export(tab: ProjectTab, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    @user_errors
    def on_export_project(fmt, request: gr.Request):
        path = wb.export_project(sid(request), fmt=fmt or "coco-rle")
        return gr.DownloadButton(value=str(path), interactive=True)

    tab.export.click(
        on_export_project, [tab.export_format], tab.download, api_name="export_project", show_progress="minimal"
    )

    def on_progress(request: gr.Request):
        return wb.progress_rows(sid(request))

    api.progress.click(on_progress, None, tab.progress, api_name="progress")
