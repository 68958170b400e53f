"""The Segment everything tab: SAM's automatic mask generator (its parameters keep SAM's
names), with progress and cancel, and the duplicate groups among the shown masks."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.common import EVERYTHING, QUICK, Outputs, sid, user_errors
from annotator.app.workbench import AMG_DEFAULTS, Workbench


@dataclass(frozen=True, eq=False)
class EverythingTab:
    points_per_side: gr.Slider
    points_per_batch: gr.Slider
    pred_iou_thresh: gr.Slider
    stability_score_thresh: gr.Slider
    box_nms_thresh: gr.Slider
    crop_n_layers: gr.Slider
    min_mask_region_area: gr.Number
    run: gr.Button
    cancel: gr.Button
    progress: gr.Textbox
    dup_iou: gr.Slider
    find_duplicates: gr.Button
    duplicates: gr.Dataframe
    keep_best: gr.Button
    merge_groups: gr.Button

    @property
    def params(self) -> list:
        """The generator's parameters, in ``on_segment_everything``'s order."""
        return [
            self.points_per_side,
            self.points_per_batch,
            self.pred_iou_thresh,
            self.stability_score_thresh,
            self.box_nms_thresh,
            self.crop_n_layers,
            self.min_mask_region_area,
        ]


# -- layout ------------------------------------------------------------------------------
def layout() -> EverythingTab:
    with gr.Tab("Segment everything", id="everything"):
        gr.Markdown(
            "SAM's automatic mask generator (parameters keep SAM's names). "
            "Masks appear as point batches finish; afterwards filter, sort "
            "and review them in the Masks tab without re-running."
        )
        params = _params()
        with gr.Row():
            run = gr.Button("Segment everything", variant="primary", elem_id="run-amg", size="sm")
            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-amg", size="sm")
        progress = gr.Textbox("", label="Progress", interactive=False, lines=2, elem_id="amg-progress")
        gr.Markdown(
            "**Duplicates**: groups of shown masks that overlap more than the "
            "IoU threshold; the best-scored mask leads each group. Click a group "
            "to select it (then Merge or Delete as usual), or resolve all groups."
        )
        with gr.Row(equal_height=True):
            dup_iou = gr.Slider(0.5, 0.99, 0.8, step=0.01, label="IoU threshold", elem_id="dup-iou", scale=2)
            find_duplicates = gr.Button("Find duplicates", elem_id="find-duplicates", size="sm", scale=1)
        duplicates = gr.Dataframe(
            headers=["group", "best", "duplicates", "masks"],
            value=[],
            interactive=False,
            label="Duplicate groups",
            show_label=False,
            elem_id="duplicates-table",
            max_height=220,
            datatype="str",
            wrap=True,
            # a group's duplicates can be a long list: it wraps in its
            # column, the last column stays in view
            column_widths=["15%", "15%", "55%", "15%"],
        )
        with gr.Row():
            keep_best = gr.Button("Keep the best of each group", elem_id="keep-best", size="sm")
            merge_groups = gr.Button("Merge each group", elem_id="merge-groups", size="sm")
    return EverythingTab(
        **params,
        run=run,
        cancel=cancel,
        progress=progress,
        dup_iou=dup_iou,
        find_duplicates=find_duplicates,
        duplicates=duplicates,
        keep_best=keep_best,
        merge_groups=merge_groups,
    )


def _params() -> dict:
    """The generator's parameter controls, by SAM's names, at the app's defaults."""
    d = AMG_DEFAULTS
    with gr.Row():
        points_per_side = gr.Slider(
            2, 64, d["points_per_side"], step=1, label="points_per_side", elem_id="points-per-side"
        )
        points_per_batch = gr.Slider(
            4, 256, d["points_per_batch"], step=4, label="points_per_batch", elem_id="points-per-batch"
        )
    with gr.Row():
        pred_iou_thresh = gr.Slider(
            0.0, 1.0, d["pred_iou_thresh"], step=0.01, label="pred_iou_thresh", elem_id="pred-iou-thresh"
        )
        stability_score_thresh = gr.Slider(
            0.0,
            1.0,
            d["stability_score_thresh"],
            step=0.01,
            label="stability_score_thresh",
            elem_id="stability-score-thresh",
        )
    with gr.Row():
        box_nms_thresh = gr.Slider(
            0.0, 1.0, d["box_nms_thresh"], step=0.01, label="box_nms_thresh", elem_id="box-nms-thresh"
        )
        crop_n_layers = gr.Slider(0, 3, d["crop_n_layers"], step=1, label="crop_n_layers", elem_id="crop-n-layers")
    min_mask_region_area = gr.Number(
        d["min_mask_region_area"],
        precision=0,
        minimum=0,
        label="min_mask_region_area (px)",
        elem_id="min-mask-region-area",
    )
    return {
        "points_per_side": points_per_side,
        "points_per_batch": points_per_batch,
        "pred_iou_thresh": pred_iou_thresh,
        "stability_score_thresh": stability_score_thresh,
        "box_nms_thresh": box_nms_thresh,
        "crop_n_layers": crop_n_layers,
        "min_mask_region_area": min_mask_region_area,
    }


# -- wiring ------------------------------------------------------------------------------
def wire(tab: EverythingTab, out: Outputs, wb: Workbench) -> None:
    _wire_run(tab, out, wb)
    _wire_duplicates(tab, out, wb)


def _wire_run(tab: EverythingTab, out: Outputs, wb: Workbench) -> None:
    @user_errors
    def on_segment_everything(pps, ppb, iou, stab, nms, crops, min_area, request: gr.Request, progress=gr.Progress()):
        params = dict(
            points_per_side=pps,
            points_per_batch=ppb,
            pred_iou_thresh=iou,
            stability_score_thresh=stab,
            box_nms_thresh=nms,
            crop_n_layers=crops,
            min_mask_region_area=min_area or 0,
        )
        progress(0.0, desc="Segment everything: first point batch")
        for step in wb.segment_everything(sid(request), **params):
            if not step.final:
                eta = f", ETA {step.eta_s:.0f} s" if step.eta_s is not None else ""
                progress((step.done, step.total), desc=f"Segment everything{eta}", unit="batches")
            shown = {**out.show(step.view), tab.progress: step.view.message}
            if step.final:
                shown[out.tabs] = gr.Tabs(selected="masks")
            yield shown

    # the progress bar shows on the progress box, so the canvas stays visible as masks appear.
    # Not in the model group: a run holds the workbench's model lock for its model calls
    # only, so other people's clicks are answered while it runs, not after the whole run.
    tab.run.click(
        on_segment_everything,
        tab.params,
        [*out.view, tab.progress, out.tabs],
        concurrency_limit=2,
        concurrency_id=EVERYTHING,
        show_progress="full",
        show_progress_on=[tab.progress],
        api_name="segment_everything",
    )

    def on_cancel(request: gr.Request):
        wb.cancel(sid(request))

    # in no group: it must run while a run is going
    tab.cancel.click(on_cancel, None, None, concurrency_limit=None, show_progress="hidden", api_name="cancel")


def _wire_duplicates(tab: EverythingTab, out: Outputs, wb: Workbench) -> None:
    outputs = [*out.view, tab.duplicates]

    @user_errors
    def on_find_duplicates(thresh, request: gr.Request):
        v = wb.find_duplicates(sid(request), float(thresh))
        return {**out.show(v), tab.duplicates: wb.duplicate_rows(sid(request))}

    tab.find_duplicates.click(on_find_duplicates, [tab.dup_iou], outputs, api_name="find_duplicates", **QUICK)

    def resolve(how):
        @user_errors
        def run(request: gr.Request):
            v = wb.resolve_duplicates(sid(request), how)
            return {**out.show(v), tab.duplicates: wb.duplicate_rows(sid(request))}

        return run

    tab.keep_best.click(resolve("keep_best"), None, outputs, api_name="keep_best", **QUICK)
    tab.merge_groups.click(resolve("merge"), None, outputs, api_name="merge_groups", **QUICK)

    @user_errors
    def on_dup_row(evt: gr.SelectData, request: gr.Request):
        row = evt.row_value
        if not row or row[0] in (None, ""):
            return out.show(wb.resend(sid(request)))
        return out.show(wb.select_duplicates(sid(request), int(row[0])))

    tab.duplicates.select(on_dup_row, None, out.view, api_visibility="private", **QUICK)
