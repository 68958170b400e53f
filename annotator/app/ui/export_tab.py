"""The Export / import tab: the masks as COCO (RLE or polygons), YOLO, labelme or VOC, checked
by reading them back, with label PNGs and figures; importing COCO JSON or SAM ``amg.py``
output for review."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.common import Outputs, sid, user_errors
from annotator.app.workbench import Workbench

# (label, value): "rle"/"polygon" are the COCO formats' API names from before there were others
FORMAT_CHOICES = [
    ("COCO JSON, RLE masks", "rle"),
    ("COCO JSON, polygons", "polygon"),
    ("YOLO segmentation (zip)", "yolo"),
    ("labelme JSON (zip)", "labelme"),
    ("Pascal VOC PNGs (zip)", "voc"),
]


@dataclass(frozen=True, eq=False)
class ExportTab:
    segmentation: gr.Radio
    tolerance: gr.Slider
    include_pending: gr.Checkbox
    with_figures: gr.Checkbox
    export: gr.Button
    download_coco: gr.DownloadButton
    files: gr.File
    import_file: gr.File


def layout() -> ExportTab:
    with gr.Tab("Export / import", id="export"):
        segmentation = gr.Radio(
            [(label, value) for label, value in FORMAT_CHOICES],
            value="rle",
            label="Format (each export is read back and checked)",
            elem_id="segmentation",
        )
        tolerance = gr.Slider(
            0.0,
            5.0,
            0.0,
            step=0.5,
            elem_id="polygon-tolerance",
            label="Polygon detail: simplify outlines by up to this many pixels (0: exact)",
        )
        with gr.Row():
            include_pending = gr.Checkbox(True, label="Include pending masks", elem_id="include-pending")
            with_figures = gr.Checkbox(True, label="Review figures (matplotlib)", elem_id="with-figures")
        with gr.Row():
            export = gr.Button("Prepare export", variant="primary", elem_id="export", size="sm")
            download_coco = gr.DownloadButton("Download", interactive=False, elem_id="download-coco", size="sm")
        files = gr.File(
            label="All files: the export, instance and class PNGs, overlay, figures",
            file_count="multiple",
            interactive=False,
            elem_id="export-files",
        )
        gr.Markdown("Rejected masks are never exported. Masks are in original image pixels.")
        import_file = gr.File(
            None,
            label="Import COCO JSON or SAM amg.py output (for review)",
            file_types=[".json"],
            type="filepath",
            elem_id="import",
        )
    return ExportTab(
        segmentation=segmentation,
        tolerance=tolerance,
        include_pending=include_pending,
        with_figures=with_figures,
        export=export,
        download_coco=download_coco,
        files=files,
        import_file=import_file,
    )


def wire(tab: ExportTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_export(fmt, pending, figures, tolerance, request: gr.Request):
        done = wb.export(sid(request), fmt, bool(pending), bool(figures), tolerance=float(tolerance or 0))
        # the DownloadButton downloads the value it already holds, so it gets the file
        # here, once the file exists (see docs/gradio6-notes.md §5)
        return {
            **out.show(done.view),
            tab.files: [str(f) for f in done.files],
            tab.download_coco: gr.DownloadButton(value=str(done.coco), interactive=True),
        }

    tab.export.click(
        on_export,
        [tab.segmentation, tab.include_pending, tab.with_figures, tab.tolerance],
        [*out.view, tab.files, tab.download_coco],
        show_progress="full",
        show_progress_on=[tab.files],
        api_name="export_coco",
    )

    @user_errors
    def on_import(path, request: gr.Request):
        if not path:
            return out.show(wb.resend(sid(request)))
        return out.show(wb.import_annotations(sid(request), path))

    tab.import_file.upload(
        on_import, [tab.import_file], out.view, show_progress="minimal", api_name="import_annotations"
    )
