"""The Masks tab: filter and sort the masks, the mask table (a row click selects), the
edit buttons (merge, subtract, delete, hide, relabel, selection) and review one at a time."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from annotator.app.ui.api import ApiInputs
from annotator.app.ui.canvas import LeftColumn
from annotator.app.ui.common import QUICK, Outputs, action, sid, user_errors
from annotator.app.workbench import REVIEW_FILTERS, TABLE_HEADERS, Workbench

SORT_CHOICES = [("id", "id"), ("predicted IoU", "predicted_iou"), ("stability", "stability_score"), ("area", "area")]


@dataclass(frozen=True, eq=False)
class MasksTab:
    min_iou: gr.Slider
    min_stability: gr.Slider
    min_area: gr.Number
    review_filter: gr.Dropdown
    sort_by: gr.Dropdown
    descending: gr.Checkbox
    table: gr.Dataframe
    merge: gr.Button
    subtract: gr.Button
    delete: gr.Button
    hide: gr.Button
    relabel: gr.Button
    select_shown: gr.Button
    clear_selection: gr.Button
    review_prev: gr.Button
    review_accept: gr.Button
    review_reject: gr.Button
    review_next: gr.Button

    @property
    def filters(self) -> list:
        return [self.min_iou, self.min_stability, self.min_area, self.review_filter, self.sort_by, self.descending]


# -- layout ------------------------------------------------------------------------------
def layout() -> MasksTab:
    with gr.Tab("Masks", id="masks"):
        with gr.Row(elem_classes="tight"):
            min_iou = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="min predicted IoU", elem_id="min-iou")
            min_stability = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="min stability", elem_id="min-stability")
        with gr.Row(elem_classes="tight"):
            min_area = gr.Number(0, label="min area (px)", precision=0, minimum=0, elem_id="min-area")
            review_filter = gr.Dropdown(list(REVIEW_FILTERS), value="all", label="review", elem_id="review-filter")
            sort_by = gr.Dropdown(SORT_CHOICES, value="id", label="sort by", elem_id="sort-by")
            descending = gr.Checkbox(False, label="desc.", elem_id="descending", scale=0, min_width=70)
        table = gr.Dataframe(
            headers=TABLE_HEADERS,
            value=[],
            interactive=False,
            label="Masks",
            show_label=False,
            elem_id="masks-table",
            max_height=380,
            wrap=False,
            datatype="str",
        )
        with gr.Row(elem_classes="tight"):
            merge = gr.Button("Merge (M)", elem_id="merge", size="sm", min_width=80)
            subtract = gr.Button("Subtract from 1st selected", elem_id="subtract", size="sm", min_width=80)
            delete = gr.Button("Delete (Del)", elem_id="delete", size="sm", variant="stop", min_width=80)
            hide = gr.Button("Hide/show (H)", elem_id="hide", size="sm", min_width=80)
        with gr.Row(elem_classes="tight"):
            relabel = gr.Button("Set label", elem_id="relabel", size="sm")
            select_shown = gr.Button("Select all shown", elem_id="select-shown", size="sm")
            clear_selection = gr.Button("Clear selection", elem_id="clear-selection", size="sm")
        gr.Markdown("**Review** one mask at a time, in the table's order (Y / X / J / K):")
        with gr.Row(elem_classes="tight"):
            small = {"size": "sm", "min_width": 80}
            review_prev = gr.Button("◀ Prev (K)", elem_id="review-prev", **small)
            review_accept = gr.Button("✓ Accept (Y)", elem_id="review-accept", **small)
            review_reject = gr.Button("✗ Reject (X)", elem_id="review-reject", **small)
            review_next = gr.Button("Next (J) ▶", elem_id="review-next", **small)
    return MasksTab(
        min_iou=min_iou,
        min_stability=min_stability,
        min_area=min_area,
        review_filter=review_filter,
        sort_by=sort_by,
        descending=descending,
        table=table,
        merge=merge,
        subtract=subtract,
        delete=delete,
        hide=hide,
        relabel=relabel,
        select_shown=select_shown,
        clear_selection=clear_selection,
        review_prev=review_prev,
        review_accept=review_accept,
        review_reject=review_reject,
        review_next=review_next,
    )


# -- wiring ------------------------------------------------------------------------------
def wire(tab: MasksTab, col: LeftColumn, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    _wire_edits(tab, col, out, wb)
    _wire_review(tab, out, wb)
    _wire_table(tab, out, api, wb)


def _wire_edits(tab: MasksTab, col: LeftColumn, out: Outputs, wb: Workbench) -> None:
    for button, method in (
        (tab.merge, wb.merge),
        (tab.subtract, wb.subtract),
        (tab.delete, wb.delete),
        (tab.hide, wb.toggle_visibility),
        (tab.select_shown, wb.select_shown),
        (tab.clear_selection, wb.clear_selection),
    ):
        button.click(action(method, out), None, out.view, api_name=method.__name__, **QUICK)

    @user_errors
    def on_relabel(text, request: gr.Request):
        return out.show(wb.relabel(sid(request), text))

    tab.relabel.click(on_relabel, [col.label], out.view, api_name="relabel", **QUICK)


def _wire_review(tab: MasksTab, out: Outputs, wb: Workbench) -> None:
    def review(state):
        @user_errors
        def run(request: gr.Request):
            return out.show(wb.review(sid(request), state))

        return run

    def step(delta):
        @user_errors
        def run(request: gr.Request):
            return out.show(wb.step(sid(request), delta))

        return run

    tab.review_accept.click(review("accepted"), None, out.view, api_name="review_accept", **QUICK)
    tab.review_reject.click(review("rejected"), None, out.view, api_name="review_reject", **QUICK)
    tab.review_next.click(step(1), None, out.view, api_name="review_next", **QUICK)
    tab.review_prev.click(step(-1), None, out.view, api_name="review_prev", **QUICK)


def _wire_table(tab: MasksTab, out: Outputs, api: ApiInputs, wb: Workbench) -> None:
    @user_errors
    def on_row(evt: gr.SelectData, request: gr.Request):
        row = evt.row_value
        if not row or row[1] in (None, ""):
            return out.show(wb.resend(sid(request)))
        return out.show(wb.select_mask(sid(request), int(row[1])))

    tab.table.select(on_row, None, out.view, api_visibility="private", **QUICK)

    @user_errors
    def on_api_select(ann_id, request: gr.Request):
        return out.show(wb.select_mask(sid(request), int(ann_id)))

    api.select.click(on_api_select, [api.mask_id], out.view, api_name="select_mask", **QUICK)

    @user_errors
    def on_filter(mi, ms, ma, rf, sb, desc, request: gr.Request):
        return out.show(wb.set_filter(sid(request), mi, ms, ma, rf, sb, desc))

    for comp in (tab.min_iou, tab.min_stability):
        comp.release(on_filter, tab.filters, out.view, show_progress="hidden", api_visibility="private")
    for comp in (tab.min_area, tab.review_filter, tab.sort_by, tab.descending):
        comp.input(on_filter, tab.filters, out.view, show_progress="hidden", api_visibility="private")
    api.filter.click(on_filter, tab.filters, out.view, api_name="set_filter", **QUICK)

    def on_table(request: gr.Request):
        return wb.table(sid(request))

    api.table.click(on_table, None, tab.table, api_name="masks")
