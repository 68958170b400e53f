"""The Gradio app: layout and event wiring only; the logic is ``annotator.workbench``.

Every event calls one ``Workbench`` method with the browser session's hash and plain
values, and shows the ``View`` it returns. Model events (upload, clicks, segment
everything) share one concurrency group so the model runs one call at a time; clicks use
``trigger_mode="multiple"`` so fast clicks are queued, never dropped. ``.select`` events
cannot be driven by ``gradio_client``, so the same logic is also exposed through hidden
buttons with explicit API names (``/click``, ``/select_mask``, ...).

``build_app`` returns the Blocks; Gradio 6 takes theme, css and js in ``launch()``, so
pass ``launch_kwargs()`` there (``annotator serve`` does).
"""

import functools
import inspect
from pathlib import Path

import gradio as gr

from annotator.backends import BackendInfo
from annotator.workbench import MODES, REVIEW_FILTERS, SORT_KEYS, TABLE_HEADERS, View, Workbench, WorkbenchError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MODEL = "model"  # the concurrency group of every event that runs the model

MODE_CHOICES = [("Positive point (P)", "positive"), ("Negative point (N)", "negative"),
                ("Box: 2 clicks (B)", "box"), ("Select (S)", "select")]
SORT_CHOICES = [("id", "id"), ("predicted IoU", "predicted_iou"), ("stability", "stability_score"),
                ("area", "area")]

CSS = """
#status textarea { font-family: ui-monospace, monospace; font-size: 12px; }
#message textarea { font-size: 13px; }
#canvas { min-height: 360px; }
#canvas img { cursor: crosshair; }
#masks-table { font-size: 12px; }
.tight { gap: 6px !important; }
footer { display: none !important; }
"""

# Keyboard shortcuts: keys click buttons / radio inputs by elem_id. Ignored while typing
# in a text field (Escape leaves the field; Enter in the label field accepts, see below).
SHORTCUTS_JS = """
() => {
  const clickId = (id) => { const el = document.getElementById(id); if (el) { el.click(); } };
  const setRadio = (id, value) => {
    const el = document.querySelector(`#${id} input[value="${value}"]`); if (el) { el.click(); }
  };
  const keys = {
    'enter': () => clickId('accept'), 'a': () => clickId('accept'), 'escape': () => clickId('clear'),
    'p': () => setRadio('mode', 'positive'), 'n': () => setRadio('mode', 'negative'),
    'b': () => setRadio('mode', 'box'), 's': () => setRadio('mode', 'select'),
    'y': () => clickId('review-accept'), 'x': () => clickId('review-reject'),
    'j': () => clickId('review-next'), 'arrowright': () => clickId('review-next'),
    'k': () => clickId('review-prev'), 'arrowleft': () => clickId('review-prev'),
    'm': () => clickId('merge'), 'h': () => clickId('hide'),
    'delete': () => clickId('delete'), 'backspace': () => clickId('delete'),
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && ((t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button'].includes(t.type))
                         || t.tagName === 'TEXTAREA' || t.isContentEditable);
    if (typing) { if (e.key === 'Escape') { t.blur(); } return; }
    if (e.altKey || e.metaKey) { return; }
    const k = e.key.toLowerCase();
    if (e.ctrlKey) {
      if (k === 'z' && !e.shiftKey) { clickId('undo'); e.preventDefault(); }
      else if (k === 'y' || (k === 'z' && e.shiftKey)) { clickId('redo'); e.preventDefault(); }
      return;
    }
    if (keys[k]) { keys[k](); e.preventDefault(); }
  });
}
"""

HELP = """
**Prompting** — *Positive/Negative point*: click the object / where the mask must not reach;
more clicks refine. The first click offers SAM's 3 candidates (whole, part, sub-part):
pick one, or click the same pixel again to cycle. *Box*: click two opposite corners; points
and a box combine. **Enter**/**A** accepts the mask with the label, **Esc** clears the prompt.

**Select** mode: a click toggles the mask under the cursor; clicking the same spot again
moves to the mask beneath (nested masks). Clicking a table row toggles that mask too.

**Keys** — P / N / B / S: modes · Enter, A: accept · Esc: clear · M: merge · H: hide/show ·
Del: delete · Ctrl+Z / Ctrl+Y: undo / redo · Review: Y accept, X reject, J / → next, K / ← previous.
"""


def launch_kwargs() -> dict:
    """What ``Blocks.launch`` needs besides host and port (Gradio 6 wants these there)."""
    theme = gr.themes.Default(primary_hue="blue", neutral_hue="slate", spacing_size="sm",
                              radius_size="sm", text_size="sm")
    return {"css": CSS, "js": SHORTCUTS_JS, "theme": theme}


def _user_errors(fn):
    """Turn ``WorkbenchError`` into a Gradio error toast (the session is left as it was)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except WorkbenchError as e:
                raise gr.Error(str(e), duration=8, print_exception=False) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WorkbenchError as e:
            raise gr.Error(str(e), duration=8, print_exception=False) from None
    return wrapper


def build_app(segmenter, info: BackendInfo, *, workbench: Workbench | None = None,
              examples: list[str] | None = None) -> gr.Blocks:
    """The app's Blocks. ``demo.workbench`` is its ``Workbench`` (for tests)."""
    wb = workbench or Workbench(segmenter, info)
    if examples is None:
        examples = [str(p) for p in sorted(ASSETS.glob("*.jpg"))]

    with gr.Blocks(title="annotator · Segment Anything") as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("### annotator", elem_id="title")
            status = gr.Textbox(info.status, label="Status", show_label=False, interactive=False, container=False,
                                elem_id="status", scale=8)
        with gr.Row():
            with gr.Column(scale=7, min_width=520):
                with gr.Row(equal_height=True):
                    mode = gr.Radio(MODE_CHOICES, value="positive", label="Mode", show_label=False, container=False,
                                    elem_id="mode", scale=3)
                    undo_btn = gr.Button("↶ Undo", elem_id="undo", size="sm", scale=0, min_width=80)
                    redo_btn = gr.Button("↷ Redo", elem_id="redo", size="sm", scale=0, min_width=80)
                canvas = gr.Image(None, format="jpeg", interactive=False, label="Canvas", show_label=False,
                                  elem_id="canvas", height="64vh", buttons=["fullscreen"],
                                  placeholder="Upload an image on the right, paste one, or pick an example.")
                message = gr.Textbox("", label="Message", show_label=False, interactive=False, container=False,
                                     elem_id="message")
                with gr.Row(equal_height=True):
                    candidates = gr.Radio([], label="SAM's candidates (same pixel again cycles)",
                                          elem_id="candidates", scale=5)
                    label = gr.Textbox("object", label="Label", elem_id="label", scale=2, max_lines=1)
                    with gr.Column(scale=1, min_width=130):
                        accept_btn = gr.Button("Accept (Enter)", variant="primary", elem_id="accept", size="sm")
                        clear_btn = gr.Button("Clear (Esc)", elem_id="clear", size="sm")
                with gr.Row(equal_height=True):
                    alpha = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Mask opacity", elem_id="alpha", scale=3)
                    outlines = gr.Checkbox(True, label="Outlines", elem_id="outlines", scale=1)
                    only_selected = gr.Checkbox(False, label="Only selected", elem_id="only-selected", scale=1)
                    coverage = gr.Checkbox(False, label="Coverage map", elem_id="coverage", scale=1)

            with gr.Column(scale=4, min_width=380):
                with gr.Tabs(selected="image") as tabs:
                    with gr.Tab("Image", id="image"):
                        upload = gr.Image(None, type="filepath", sources=["upload", "clipboard"],
                                          label="Upload or paste an image", elem_id="upload", height=220)
                        gr.Examples(examples, inputs=upload, label="Examples (assets/)")
                        gr.Markdown(HELP)
                    with gr.Tab("Masks", id="masks"):
                        with gr.Row(elem_classes="tight"):
                            min_iou = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="min predicted IoU",
                                                elem_id="min-iou")
                            min_stability = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="min stability",
                                                      elem_id="min-stability")
                        with gr.Row(elem_classes="tight"):
                            min_area = gr.Number(0, label="min area (px)", precision=0, minimum=0,
                                                 elem_id="min-area")
                            review_filter = gr.Dropdown(list(REVIEW_FILTERS), value="all", label="review",
                                                        elem_id="review-filter")
                            sort_by = gr.Dropdown(SORT_CHOICES, value="id", label="sort by", elem_id="sort-by")
                            descending = gr.Checkbox(False, label="descending", elem_id="descending")
                        table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="Masks",
                                             show_label=False,
                                             elem_id="masks-table", max_height=360, wrap=False,
                                             datatype="str")
                        with gr.Row(elem_classes="tight"):
                            merge_btn = gr.Button("Merge (M)", elem_id="merge", size="sm")
                            subtract_btn = gr.Button("Subtract", elem_id="subtract", size="sm")
                            delete_btn = gr.Button("Delete (Del)", elem_id="delete", size="sm", variant="stop")
                            hide_btn = gr.Button("Hide/show (H)", elem_id="hide", size="sm")
                        with gr.Row(elem_classes="tight"):
                            relabel_btn = gr.Button("Set label", elem_id="relabel", size="sm")
                            select_shown_btn = gr.Button("Select all shown", elem_id="select-shown", size="sm")
                            clear_sel_btn = gr.Button("Clear selection", elem_id="clear-selection", size="sm")
                        gr.Markdown("**Review** — one mask at a time, in the table's order:")
                        with gr.Row(elem_classes="tight"):
                            prev_btn = gr.Button("◀ Prev (K)", elem_id="review-prev", size="sm")
                            accept_review_btn = gr.Button("Accept (Y)", elem_id="review-accept", size="sm",
                                                          variant="primary")
                            reject_review_btn = gr.Button("Reject (X)", elem_id="review-reject", size="sm",
                                                          variant="stop")
                            next_btn = gr.Button("Next ▶ (J)", elem_id="review-next", size="sm")

                    with gr.Tab("Export / import", id="export"):
                        segmentation = gr.Radio([("COCO JSON, RLE masks", "rle"), ("COCO JSON, polygons", "polygon")],
                                                value="rle", label="Mask format", elem_id="segmentation")
                        with gr.Row():
                            include_pending = gr.Checkbox(True, label="Include pending masks",
                                                          elem_id="include-pending")
                            with_figures = gr.Checkbox(True, label="Review figures (matplotlib)",
                                                       elem_id="with-figures")
                        export_btn = gr.Button("Prepare export", variant="primary", elem_id="export")
                        download_coco = gr.DownloadButton("Download COCO JSON", interactive=False,
                                                          elem_id="download-coco")
                        export_files = gr.File(label="All files: COCO JSON, instance and class PNGs, "
                                                     "overlay, figures", file_count="multiple",
                                               interactive=False, elem_id="export-files")
                        gr.Markdown("Rejected masks are never exported. Masks are in original image pixels.")
                        import_file = gr.File(None, label="Import COCO JSON or SAM amg.py output (for review)",
                                              file_types=[".json"], type="filepath", elem_id="import")

        # API-only twins of the events gradio_client cannot drive (.select) or that take
        # hidden values; not shown in the page.
        with gr.Row(visible=False):
            api_x = gr.Number(0, label="x (image pixels)")
            api_y = gr.Number(0, label="y (image pixels)")
            api_id = gr.Number(0, label="mask id", precision=0)
            api_click = gr.Button("click")
            api_select = gr.Button("select mask")
            api_table = gr.Button("masks")
            api_filter = gr.Button("filter")
            api_view = gr.Button("view")

        view_out = [canvas, status, message, candidates, table, mode]

        def show(v: View):
            return (gr.skip() if v.canvas is None else v.canvas, v.status, v.message,
                    gr.Radio(choices=v.candidates, value=v.candidate),
                    gr.skip() if v.table is None else v.table, v.mode)

        def sid(request: gr.Request) -> str:
            return request.session_hash

        # -- image ---------------------------------------------------------------------
        @_user_errors
        def on_upload(path, request: gr.Request, progress=gr.Progress()):
            if not path:
                return
            yield (*show(wb.load(sid(request), path)), gr.Tabs(selected="masks"))
            progress(0.0, desc="Computing the image embedding…")
            yield (*show(wb.encode(sid(request))), gr.skip())

        upload.change(on_upload, [upload], [*view_out, tabs], concurrency_limit=1,
                      concurrency_id=MODEL, api_name="upload")

        # -- clicks --------------------------------------------------------------------
        @_user_errors
        def on_canvas_select(mode_value, evt: gr.SelectData, request: gr.Request):
            x, y = evt.index
            return show(wb.click_display(sid(request), x, y, mode_value))

        canvas.select(on_canvas_select, [mode], view_out, trigger_mode="multiple",
                      show_progress="minimal", concurrency_limit=1, concurrency_id=MODEL,
                      api_visibility="private")

        @_user_errors
        def on_api_click(x, y, mode_value, request: gr.Request):
            return show(wb.click(sid(request), float(x), float(y), mode_value))

        api_click.click(on_api_click, [api_x, api_y, mode], view_out, concurrency_limit=1,
                        concurrency_id=MODEL, api_name="click")

        @_user_errors
        def on_mode(mode_value, request: gr.Request):
            return show(wb.set_mode(sid(request), mode_value))

        mode.input(on_mode, [mode], view_out, show_progress="hidden", api_name="set_mode")

        @_user_errors
        def on_candidate(position, request: gr.Request):
            if position is None:
                return show(wb.resend(sid(request)))
            return show(wb.choose_candidate(sid(request), int(position)))

        candidates.input(on_candidate, [candidates], view_out, show_progress="hidden",
                         api_name="choose_candidate")

        # -- prompt and document actions (one-argument-less Workbench methods) --------------
        def action(method):
            @_user_errors
            def run(request: gr.Request):
                return show(method(sid(request)))
            run.__name__ = method.__name__
            return run

        @_user_errors
        def on_accept(text, request: gr.Request):
            return show(wb.accept(sid(request), text))

        accept_btn.click(on_accept, [label], view_out, api_name="accept")
        label.submit(on_accept, [label], view_out, api_visibility="private")
        clear_btn.click(action(wb.clear_prompt), None, view_out, api_name="clear_prompt")
        undo_btn.click(action(wb.undo), None, view_out, concurrency_limit=1, concurrency_id=MODEL,
                       api_name="undo")
        redo_btn.click(action(wb.redo), None, view_out, api_name="redo")
        merge_btn.click(action(wb.merge), None, view_out, api_name="merge")
        subtract_btn.click(action(wb.subtract), None, view_out, api_name="subtract")
        delete_btn.click(action(wb.delete), None, view_out, api_name="delete")
        hide_btn.click(action(wb.toggle_visibility), None, view_out, api_name="toggle_visibility")
        select_shown_btn.click(action(wb.select_shown), None, view_out, api_name="select_shown")
        clear_sel_btn.click(action(wb.clear_selection), None, view_out, api_name="clear_selection")

        @_user_errors
        def on_relabel(text, request: gr.Request):
            return show(wb.relabel(sid(request), text))

        relabel_btn.click(on_relabel, [label], view_out, api_name="relabel")

        def review(state):
            @_user_errors
            def run(request: gr.Request):
                return show(wb.review(sid(request), state))
            return run

        def step(delta):
            @_user_errors
            def run(request: gr.Request):
                return show(wb.step(sid(request), delta))
            return run

        accept_review_btn.click(review("accepted"), None, view_out, api_name="review_accept")
        reject_review_btn.click(review("rejected"), None, view_out, api_name="review_reject")
        next_btn.click(step(1), None, view_out, api_name="review_next")
        prev_btn.click(step(-1), None, view_out, api_name="review_prev")

        # -- the mask table ------------------------------------------------------------
        @_user_errors
        def on_row(evt: gr.SelectData, request: gr.Request):
            row = evt.row_value
            if not row or row[1] in (None, ""):
                return show(wb.resend(sid(request)))
            return show(wb.select_mask(sid(request), int(row[1])))

        table.select(on_row, None, view_out, api_visibility="private")

        @_user_errors
        def on_api_select(ann_id, request: gr.Request):
            return show(wb.select_mask(sid(request), int(ann_id)))

        api_select.click(on_api_select, [api_id], view_out, api_name="select_mask")

        @_user_errors
        def on_filter(mi, ms, ma, rf, sb, desc, request: gr.Request):
            return show(wb.set_filter(sid(request), mi, ms, ma, rf, sb, desc))

        filter_in = [min_iou, min_stability, min_area, review_filter, sort_by, descending]
        for comp in (min_iou, min_stability):
            comp.release(on_filter, filter_in, view_out, show_progress="hidden", api_visibility="private")
        for comp in (min_area, review_filter, sort_by, descending):
            comp.input(on_filter, filter_in, view_out, show_progress="hidden", api_visibility="private")
        api_filter.click(on_filter, filter_in, view_out, api_name="set_filter")

        @_user_errors
        def on_view(a, o, only, cov, request: gr.Request):
            return show(wb.set_view(sid(request), a, o, only, cov))

        view_in = [alpha, outlines, only_selected, coverage]
        alpha.release(on_view, view_in, view_out, show_progress="hidden", api_visibility="private")
        for comp in (outlines, only_selected, coverage):
            comp.input(on_view, view_in, view_out, show_progress="hidden", api_visibility="private")
        api_view.click(on_view, view_in, view_out, api_name="set_view")

        def on_table(request: gr.Request):
            return wb.table(sid(request))

        api_table.click(on_table, None, table, api_name="masks")

        # -- export and import ---------------------------------------------------------
        @_user_errors
        def on_export(fmt, pending, figures, request: gr.Request):
            out = wb.export(sid(request), fmt, bool(pending), bool(figures))
            # the DownloadButton downloads the value it already holds, so it gets the file
            # here, once the file exists (see docs/gradio6-notes.md §5)
            return (*show(out.view), [str(f) for f in out.files],
                    gr.DownloadButton(value=str(out.coco), interactive=True))

        export_btn.click(on_export, [segmentation, include_pending, with_figures],
                         [*view_out, export_files, download_coco], api_name="export_coco")

        @_user_errors
        def on_import(path, request: gr.Request):
            if not path:
                return show(wb.resend(sid(request)))
            return show(wb.import_annotations(sid(request), path))

        import_file.upload(on_import, [import_file], view_out, api_name="import_annotations")

        # -- sessions ------------------------------------------------------------------
        def on_load(request: gr.Request):
            return show(wb.resend(sid(request)))

        demo.load(on_load, None, view_out, api_visibility="private")

        def on_unload(request: gr.Request):
            wb.free(sid(request))

        demo.unload(on_unload)

    demo.workbench = wb
    return demo
