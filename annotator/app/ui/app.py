"""The Gradio app: layout and event wiring only; the logic is ``annotator.app.workbench``.

Every event calls one ``Workbench`` method with the browser session's hash and plain
values, and shows the ``View`` it returns. Model events (upload, clicks, segment
everything) take the workbench's model lock, one model call at a time; clicks and uploads
also share one concurrency group, while segment everything has its own and holds the lock
only for its model calls, so other sessions' clicks are answered while it runs; clicks use
``trigger_mode="multiple"`` so fast clicks are queued, never dropped. ``.select`` events
cannot be driven by ``gradio_client``, so the same logic is also exposed through hidden
buttons with explicit API names (``/click``, ``/select_mask``, ...).

``build_app`` returns the Blocks; Gradio 6 takes theme, css and js in ``launch()``, so
pass ``launch_kwargs()`` there (``annotator serve`` does): it also carries the upload size
limit and the paths the server must never serve. The queue holds at most
``Limits.max_queue`` waiting events; more are refused at once ("queue is full").
"""

import base64
import binascii
import functools
import inspect
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from annotator.models.loading import BackendInfo
from annotator.models.checkpoints import cache_dir
from annotator.limits import Limits
from annotator.app.ui.canvas import AnnotationCanvas
from annotator.projects.folders import FolderPolicy
from annotator.projects.library import ProjectLibrary
from annotator.app.workbench import (AMG_DEFAULTS, COMPUTING, REVIEW_FILTERS, TABLE_HEADERS, View, Workbench,
                                 WorkbenchError)

ASSETS = Path(__file__).resolve().parents[3] / "assets"  # the checkout's assets/ folder
MODEL = "model"  # the concurrency group of the events that run the model once (upload, clicks)
EVERYTHING = "everything"  # segment-everything runs; they share the model call by call (Workbench.model_lock)
# The browser keeps {"project": name, "image": id} (encrypted in localStorage) to reopen its
# place after a reload or a server restart; the secret must not change between starts (the
# default is random per start), and the value is no secret (a name and a number).
RESUME_KEY = "annotator-resume"
RESUME_SECRET = "annotator-resume-v1"
PROGRESS_HEADERS = ["", "#", "image", "status", "masks", "accepted"]

MODE_CHOICES = [("Positive point (P)", "positive"), ("Negative (N)", "negative"),
                ("Box, 2 clicks (B)", "box"), ("Select (S)", "select")]
SORT_CHOICES = [("id", "id"), ("predicted IoU", "predicted_iou"), ("stability", "stability_score"),
                ("area", "area")]

CSS = """
#status textarea { font-family: ui-monospace, monospace; font-size: 12px; }
#message textarea { font-size: 13px; }
#masks-table { font-size: 12px; }
#masks-table [role=gridcell], #masks-table [role=columnheader] { padding: 2px 5px !important; }
.tight { gap: 6px !important; }
#candidates label { padding: 2px 6px !important; font-size: 12px; }
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
    '.': () => clickId('image-next'), 'pagedown': () => clickId('image-next'),
    ',': () => clickId('image-prev'), 'pageup': () => clickId('image-prev'),
    'd': () => clickId('image-done'),
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && ((t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button'].includes(t.type))
                         || t.tagName === 'TEXTAREA' || t.isContentEditable);
    if (typing) {
      if (e.key === 'Escape') { t.blur(); }
      // Enter in the label field accepts (its submit event); then the field lets go, so the
      // next keys are shortcuts again and never land in the label. (Blurred after the key's
      // own events: the field submits on keypress.)
      else if (e.key === 'Enter' && t.closest('#label')) { setTimeout(() => t.blur(), 0); }
      return;
    }
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
**Canvas** — *click* the object for a positive point, *right click* (or Alt+click) where the
mask must not reach, *drag* for a box; points and a box combine; click a point to remove it.
The first click offers SAM's 3 candidates (Tab cycles). **Enter** accepts the mask with the
current class (keys 1-9, or the label below), **Esc** clears the prompt. Wheel / + / - zoom,
0 fits, Space+drag or the middle button pans. **S** select tool, **B** brush and **E** eraser
on the selected mask (**[ ]** size), **P** back to prompting. Opacity, Hide (H), Only
selected (O) and Outlines (L) are drawn in the browser. **?** over the canvas lists the keys.

**Keys** elsewhere — M: merge · H: hide/show · Del: delete · Ctrl+Z / Ctrl+Y: undo / redo ·
Review: Y accept, X reject, J / → next, K / ← previous. In a project: **.** / PageDown next
image, **,** / PageUp previous image, **D** done / pending.
"""


def launch_kwargs(limits: Limits | None = None, info: BackendInfo | None = None,
                  private: Sequence = ()) -> dict:
    """What ``Blocks.launch`` needs besides host and port (Gradio 6 wants these there).

    Gradio serves only its upload and cache folders (no ``allowed_paths`` are given); the
    checkpoint, the checkpoint cache and the ``private`` folders (the projects) are blocked
    as well, so that even an operator's ``GRADIO_ALLOWED_PATHS`` cannot expose them
    (blocked paths win over allowed ones)."""
    limits = limits or Limits()
    theme = gr.themes.Default(primary_hue="blue", neutral_hue="slate", spacing_size="sm",
                              radius_size="sm", text_size="sm")
    blocked = [str(cache_dir())]
    if info is not None and info.checkpoint:
        blocked.append(str(Path(info.checkpoint).resolve()))
    blocked += [str(Path(p).resolve()) for p in private]
    return {"css": CSS, "js": SHORTCUTS_JS, "theme": theme, "max_file_size": limits.upload_bytes,
            "blocked_paths": blocked}


def read_by_the_app(image: gr.Image) -> gr.Image:
    """``image``, its uploads passed to the handler as the uploaded file's path, unread.

    Gradio's own preprocessing opens the file with PIL first: an empty or non-image file
    then fails with a generic error before the app sees it, and a 16-bit image is clipped
    to 8 bits. ``annotator.formats.images`` reads every file instead, with a clear message for
    each bad one. (Set on the instance: a subclass of a Gradio component makes Gradio write
    a ``.pyi`` file beside this module at import. So the component must never be an event's
    output: Gradio would then keep a new instance per session, without this.) An inline
    ``data:`` image is decoded here and read by the app too."""
    def preprocess(payload):
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):  # an inline image (API clients): its bytes, read by the app
            data = url.partition(",")[2]
            try:
                return base64.b64decode(data, validate=True) or b"\0"
            except (binascii.Error, ValueError):
                return data.encode() or b"\0"  # not base64: the reader says it is no image
        return payload.path

    image.preprocess = preprocess
    return image


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
              examples: list[str] | None = None, limits: Limits | None = None,
              projects_dir: str | Path | None = None, allow_folders=()) -> gr.Blocks:
    """The app's Blocks. ``demo.workbench`` is its ``Workbench`` (for tests). Projects live
    in ``projects_dir``; ``allow_folders`` are the server folders images may be added from
    (both only used when no ``workbench`` is given)."""
    wb = workbench or Workbench(segmenter, info, limits=limits, projects=ProjectLibrary(projects_dir),
                                folders=FolderPolicy.from_env(allow_folders))
    wb.browser_canvas = True  # the canvas draws in the browser; views carry frames for it
    if examples is None:
        examples = [str(p) for p in sorted(ASSETS.glob("*.jpg"))]

    with gr.Blocks(title="annotator · Segment Anything", fill_width=True) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("### annotator", elem_id="title")
            status = gr.Textbox(info.status, label="Status", show_label=False, interactive=False,
                                container=False, elem_id="status", scale=8)
        with gr.Row():
            with gr.Column(scale=7, min_width=600):
                # the prompt mode of /click (API); in the page the canvas's own tools set it
                mode = gr.Radio(MODE_CHOICES, value="positive", label="Mode", show_label=False,
                                container=False, elem_id="mode", visible=False)
                canvas = AnnotationCanvas(elem_id="canvas", image_for_key=wb.canvas_image,
                                          height="max(360px, calc(100vh - 390px))")
                message = gr.Textbox("", label="Message", show_label=False, interactive=False,
                                     container=False, elem_id="message")
                with gr.Row(visible=False, equal_height=True, elem_id="image-nav") as nav_row:
                    prev_image_btn = gr.Button("◀ Previous image (,)", elem_id="image-prev", size="sm")
                    done_btn = gr.Button("✓ Done / pending (D)", elem_id="image-done", size="sm")
                    next_image_btn = gr.Button("Next image (.) ▶", elem_id="image-next", size="sm")
                with gr.Row(equal_height=True):
                    candidates = gr.Radio([], label="SAM's candidates (same pixel again cycles)",
                                          elem_id="candidates", scale=6)
                    label = gr.Textbox("object", label="Label", elem_id="label", scale=2, max_lines=1)
                    with gr.Column(scale=1, min_width=120):
                        accept_btn = gr.Button("Accept (Enter)", variant="primary", elem_id="accept",
                                               size="sm")
                        clear_btn = gr.Button("Clear (Esc)", elem_id="clear", size="sm")
                    with gr.Column(scale=1, min_width=120):
                        undo_btn = gr.Button("↶ Undo (Ctrl+Z)", elem_id="undo", size="sm")
                        redo_btn = gr.Button("↷ Redo (Ctrl+Y)", elem_id="redo", size="sm")
                with gr.Row(equal_height=True, visible=False):  # the canvas toolbar does these
                    alpha = gr.Slider(0.0, 1.0, 0.5, step=0.05, label="Mask opacity", elem_id="alpha",
                                      scale=3)
                    outlines = gr.Checkbox(True, label="Outlines", elem_id="outlines", scale=1)
                    only_selected = gr.Checkbox(False, label="Only selected", elem_id="only-selected",
                                                scale=1)
                    coverage = gr.Checkbox(False, label="Coverage map", elem_id="coverage", scale=1)

            with gr.Column(scale=3, min_width=360):
                with gr.Tabs(selected="image") as tabs:
                    with gr.Tab("Image", id="image"):
                        upload = read_by_the_app(gr.Image(
                            None, type="filepath", sources=["upload", "clipboard"],
                            label="Upload or paste an image", elem_id="upload", height=220))
                        # not gr.Examples: it writes the example into the upload component, and
                        # Gradio then keeps a fresh copy of that component per session, without
                        # read_by_the_app, so the next upload was read by PIL (a traceback for a
                        # non-image). An example is opened by the app's reader like any upload.
                        example_list = gr.Dataset(components=["textbox"], samples=[[e] for e in examples],
                                                  sample_labels=[Path(e).stem for e in examples],
                                                  label="Examples (assets/)", elem_id="examples",
                                                  type="index", samples_per_page=len(examples) or 1)
                        gr.Markdown(HELP)
                    with gr.Tab("Project", id="project"):
                        gr.Markdown("A **project** keeps many images and saves every edit as you go; "
                                    "reload the page or restart the server and it reopens here.")
                        with gr.Row(equal_height=True):
                            project_name = gr.Dropdown(wb.project_names(), value=None, allow_custom_value=True,
                                                       label="Project (pick one, or type a new name)",
                                                       elem_id="project-name", scale=3)
                            with gr.Column(scale=1, min_width=120):
                                open_project_btn = gr.Button("Open / create", variant="primary",
                                                             elem_id="open-project", size="sm")
                                close_project_btn = gr.Button("Close project", elem_id="close-project",
                                                              size="sm")
                        add_images = gr.File(None, file_count="multiple", file_types=["image"],
                                             type="filepath",
                                             label="Add images (several at once)", elem_id="add-images",
                                             height=120)
                        with gr.Row(equal_height=True, visible=bool(wb.folders)):
                            folder = gr.Textbox("", label="Add a server folder (allowed: "
                                                + ", ".join(str(a) for a in wb.folders.allowed) + ")",
                                                elem_id="folder", scale=3, max_lines=1)
                            recursive = gr.Checkbox(False, label="subfolders", elem_id="recursive", scale=0,
                                                    min_width=90)
                            add_folder_btn = gr.Button("Add folder", elem_id="add-folder", size="sm",
                                                       scale=1)
                        progress_table = gr.Dataframe(headers=PROGRESS_HEADERS, value=[], interactive=False,
                                                      label="Images (click one to open it)",
                                                      elem_id="progress-table", max_height=300, wrap=False,
                                                      datatype="str")
                        with gr.Row():
                            export_project_btn = gr.Button("Prepare project export", elem_id="export-project",
                                                           size="sm")
                            download_project = gr.DownloadButton("Download project COCO JSON",
                                                                 interactive=False, elem_id="download-project",
                                                                 size="sm")
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
                            sort_by = gr.Dropdown(SORT_CHOICES, value="id", label="sort by",
                                                  elem_id="sort-by")
                            descending = gr.Checkbox(False, label="desc.", elem_id="descending", scale=0,
                                                     min_width=70)
                        table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False,
                                             label="Masks", show_label=False, elem_id="masks-table",
                                             max_height=380, wrap=False, datatype="str")
                        with gr.Row(elem_classes="tight"):
                            merge_btn = gr.Button("Merge (M)", elem_id="merge", size="sm", min_width=80)
                            subtract_btn = gr.Button("Subtract from 1st selected", elem_id="subtract", size="sm", min_width=80)
                            delete_btn = gr.Button("Delete (Del)", elem_id="delete", size="sm",
                                                   variant="stop", min_width=80)
                            hide_btn = gr.Button("Hide/show (H)", elem_id="hide", size="sm", min_width=80)
                        with gr.Row(elem_classes="tight"):
                            relabel_btn = gr.Button("Set label", elem_id="relabel", size="sm")
                            select_shown_btn = gr.Button("Select all shown", elem_id="select-shown",
                                                         size="sm")
                            clear_sel_btn = gr.Button("Clear selection", elem_id="clear-selection", size="sm")
                        gr.Markdown("**Review** one mask at a time, in the table's order (Y / X / J / K):")
                        with gr.Row(elem_classes="tight"):
                            small = {"size": "sm", "min_width": 80}
                            prev_btn = gr.Button("◀ Prev (K)", elem_id="review-prev", **small)
                            accept_review_btn = gr.Button("✓ Accept (Y)", elem_id="review-accept", **small)
                            reject_review_btn = gr.Button("✗ Reject (X)", elem_id="review-reject", **small)
                            next_btn = gr.Button("Next (J) ▶", elem_id="review-next", **small)

                    with gr.Tab("Everything", id="everything"):  # short: the side panel is narrow
                        gr.Markdown("SAM's automatic mask generator (parameters keep SAM's names). "
                                    "Masks appear as point batches finish; afterwards filter, sort "
                                    "and review them in the Masks tab without re-running.")
                        d = AMG_DEFAULTS
                        with gr.Row():
                            points_per_side = gr.Slider(2, 64, d["points_per_side"], step=1,
                                                        label="points_per_side", elem_id="points-per-side")
                            points_per_batch = gr.Slider(4, 256, d["points_per_batch"], step=4,
                                                         label="points_per_batch", elem_id="points-per-batch")
                        with gr.Row():
                            pred_iou_thresh = gr.Slider(0.0, 1.0, d["pred_iou_thresh"], step=0.01,
                                                        label="pred_iou_thresh", elem_id="pred-iou-thresh")
                            stability_score_thresh = gr.Slider(
                                0.0, 1.0, d["stability_score_thresh"], step=0.01,
                                label="stability_score_thresh", elem_id="stability-score-thresh")
                        with gr.Row():
                            box_nms_thresh = gr.Slider(0.0, 1.0, d["box_nms_thresh"], step=0.01,
                                                       label="box_nms_thresh", elem_id="box-nms-thresh")
                            crop_n_layers = gr.Slider(0, 3, d["crop_n_layers"], step=1, label="crop_n_layers",
                                                      elem_id="crop-n-layers")
                        min_mask_region_area = gr.Number(d["min_mask_region_area"], precision=0, minimum=0,
                                                         label="min_mask_region_area (px)",
                                                         elem_id="min-mask-region-area")
                        with gr.Row():
                            run_amg_btn = gr.Button("Segment everything", variant="primary",
                                                    elem_id="run-amg", size="sm")
                            cancel_amg_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-amg",
                                                       size="sm")
                        amg_progress = gr.Textbox("", label="Progress", interactive=False, lines=2,
                                                  elem_id="amg-progress")
                        gr.Markdown("**Duplicates**: groups of shown masks that overlap more than the "
                                    "IoU threshold; the best-scored mask leads each group. Click a group "
                                    "to select it (then Merge or Delete as usual), or resolve all groups.")
                        with gr.Row(equal_height=True):
                            dup_iou = gr.Slider(0.5, 0.99, 0.8, step=0.01, label="IoU threshold",
                                                elem_id="dup-iou", scale=2)
                            find_dup_btn = gr.Button("Find duplicates", elem_id="find-duplicates", size="sm",
                                                     scale=1)
                        dup_table = gr.Dataframe(headers=["group", "best", "duplicates", "masks"],
                                                 value=[], interactive=False, label="Duplicate groups",
                                                 show_label=False, elem_id="duplicates-table",
                                                 max_height=220, datatype="str", wrap=True,
                                                 # a group's duplicates can be a long list: it wraps
                                                 # in its column, the last column stays in view
                                                 column_widths=["15%", "15%", "55%", "15%"])
                        with gr.Row():
                            keep_best_btn = gr.Button("Keep the best of each group", elem_id="keep-best",
                                                      size="sm")
                            merge_groups_btn = gr.Button("Merge each group", elem_id="merge-groups",
                                                         size="sm")
                    with gr.Tab("Export", id="export"):
                        segmentation = gr.Radio(
                            [("COCO JSON, RLE masks", "rle"), ("COCO JSON, polygons", "polygon")],
                            value="rle", label="Mask format", elem_id="segmentation")
                        with gr.Row():
                            include_pending = gr.Checkbox(True, label="Include pending masks",
                                                          elem_id="include-pending")
                            with_figures = gr.Checkbox(True, label="Review figures (matplotlib)",
                                                       elem_id="with-figures")
                        with gr.Row():
                            export_btn = gr.Button("Prepare export", variant="primary", elem_id="export",
                                                   size="sm")
                            download_coco = gr.DownloadButton("Download COCO JSON", interactive=False,
                                                              elem_id="download-coco", size="sm")
                        export_files = gr.File(label="All files: COCO JSON, instance and class PNGs, "
                                                     "overlay, figures", file_count="multiple",
                                               interactive=False, elem_id="export-files")
                        gr.Markdown("Rejected masks are never exported. Masks are in original image pixels.")
                        import_file = gr.File(None, label="Import COCO JSON or SAM amg.py output "
                                                          "(for review)",
                                              file_types=[".json"], type="filepath", elem_id="import")

        # API-only twins of the events gradio_client cannot drive (.select) or that take
        # hidden values; not shown in the page.
        with gr.Row(visible=False):
            api_x = gr.Number(0, label="x (image pixels)")
            api_y = gr.Number(0, label="y (image pixels)")
            api_id = gr.Number(0, label="mask id", precision=0)
            api_x1 = gr.Number(0, label="x1 (image pixels)")
            api_y1 = gr.Number(0, label="y1 (image pixels)")
            api_strokes = gr.JSON(None, label="strokes [{points, radius, erase}]")
            api_click = gr.Button("click")
            api_box = gr.Button("box")
            api_remove_point = gr.Button("remove point")
            api_paint = gr.Button("paint")
            api_select = gr.Button("select mask")
            api_table = gr.Button("masks")
            api_filter = gr.Button("filter")
            api_view = gr.Button("view")
            api_position = gr.Number(0, label="image position (0-based)", precision=0)
            api_go = gr.Button("go to image")
            api_progress = gr.Button("progress")
        resume = gr.BrowserState(None, storage_key=RESUME_KEY, secret=RESUME_SECRET)

        # (the mode radio is an output of accept only, which resets it; a late response to
        # any other event must never switch it back)
        view_out = [canvas, status, message, candidates, table, progress_table]

        def show(v: View):
            return (gr.skip() if v.frame is None else v.frame(), v.status, v.message,
                    gr.Radio(choices=v.candidates, value=v.candidate),
                    gr.skip() if v.table is None else v.table,
                    gr.skip() if v.progress is None else v.progress)

        def sid(request: gr.Request) -> str:
            return request.session_hash

        # -- image ---------------------------------------------------------------------
        @_user_errors
        def on_upload(path, request: gr.Request):
            if not path:
                return
            yield from open_file(path, request)

        def open_file(path, request: gr.Request):
            if wb.project_of(sid(request)) is not None:  # in a project: it joins the project
                first = wb.add_uploads(sid(request), [path], encode=False, show=True)
            else:
                first = wb.load(sid(request), path)
            # the image shows at once; the embedding follows (the status line shows the timer)
            # (in a project the browser remembers the new image, to reopen it after a reload)
            yield (*show(first), gr.Tabs(selected="masks"), wb.resume_state(sid(request)))
            yield (*show(wb.encode(sid(request))), gr.skip(), gr.skip())

        upload.change(on_upload, [upload], [*view_out, tabs, resume], concurrency_limit=1,
                      concurrency_id=MODEL,
                      show_progress="full", show_progress_on=[status], api_name="upload")

        @_user_errors
        def on_example(index, request: gr.Request):
            if index is None:
                return
            yield from open_file(examples[int(index)], request)

        example_list.click(on_example, [example_list], [*view_out, tabs, resume], concurrency_limit=1,
                           concurrency_id=MODEL, show_progress="full", show_progress_on=[status],
                           api_visibility="private")

        # -- clicks --------------------------------------------------------------------
        @_user_errors
        def on_canvas(message, text, request: gr.Request):
            return show(wb.canvas_actions(sid(request), message, text))

        # every action of the canvas (points, boxes, strokes, accept, undo ...) in one queue,
        # in order; the browser re-sends what is not acknowledged yet, so none is lost
        canvas.input(on_canvas, [canvas, label], view_out, trigger_mode="multiple", show_progress="hidden",
                     concurrency_limit=1, concurrency_id=MODEL, api_name="canvas_actions")

        @_user_errors
        def on_api_box(x0, y0, x1, y1, request: gr.Request):
            return show(wb.drag_box(sid(request), float(x0), float(y0), float(x1), float(y1)))

        api_box.click(on_api_box, [api_x, api_y, api_x1, api_y1], view_out, concurrency_limit=1,
                      concurrency_id=MODEL, api_name="drag_box")

        @_user_errors
        def on_api_remove_point(index, request: gr.Request):
            return show(wb.remove_point(sid(request), int(index)))

        api_remove_point.click(on_api_remove_point, [api_id], view_out, concurrency_limit=1,
                               concurrency_id=MODEL, api_name="remove_point")

        @_user_errors
        def on_api_paint(ann_id, strokes, request: gr.Request):
            return show(wb.paint(sid(request), int(ann_id), strokes))

        api_paint.click(on_api_paint, [api_id, api_strokes], view_out, api_name="paint", show_progress="minimal")

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
            v = wb.accept(sid(request), text)
            return (*show(v), v.mode)  # the mode the next object starts in (positive, or box)

        quick = {"show_progress": "minimal"}  # no overlay over the canvas for fast actions
        accept_btn.click(on_accept, [label], [*view_out, mode], api_name="accept", **quick)
        label.submit(on_accept, [label], [*view_out, mode], api_visibility="private", **quick)
        # undo may re-run the model (the last prompt point), so it queues with the clicks
        undo_btn.click(action(wb.undo), None, view_out, concurrency_limit=1, concurrency_id=MODEL,
                       api_name="undo", **quick)
        for button, method in ((clear_btn, wb.clear_prompt), (redo_btn, wb.redo), (merge_btn, wb.merge),
                               (subtract_btn, wb.subtract), (delete_btn, wb.delete),
                               (hide_btn, wb.toggle_visibility), (select_shown_btn, wb.select_shown),
                               (clear_sel_btn, wb.clear_selection)):
            button.click(action(method), None, view_out, api_name=method.__name__, **quick)

        @_user_errors
        def on_relabel(text, request: gr.Request):
            return show(wb.relabel(sid(request), text))

        relabel_btn.click(on_relabel, [label], view_out, api_name="relabel", **quick)

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

        accept_review_btn.click(review("accepted"), None, view_out, api_name="review_accept", **quick)
        reject_review_btn.click(review("rejected"), None, view_out, api_name="review_reject", **quick)
        next_btn.click(step(1), None, view_out, api_name="review_next", **quick)
        prev_btn.click(step(-1), None, view_out, api_name="review_prev", **quick)

        # -- the mask table ------------------------------------------------------------
        @_user_errors
        def on_row(evt: gr.SelectData, request: gr.Request):
            row = evt.row_value
            if not row or row[1] in (None, ""):
                return show(wb.resend(sid(request)))
            return show(wb.select_mask(sid(request), int(row[1])))

        table.select(on_row, None, view_out, api_visibility="private", **quick)

        @_user_errors
        def on_api_select(ann_id, request: gr.Request):
            return show(wb.select_mask(sid(request), int(ann_id)))

        api_select.click(on_api_select, [api_id], view_out, api_name="select_mask", **quick)

        @_user_errors
        def on_filter(mi, ms, ma, rf, sb, desc, request: gr.Request):
            return show(wb.set_filter(sid(request), mi, ms, ma, rf, sb, desc))

        filter_in = [min_iou, min_stability, min_area, review_filter, sort_by, descending]
        for comp in (min_iou, min_stability):
            comp.release(on_filter, filter_in, view_out, show_progress="hidden", api_visibility="private")
        for comp in (min_area, review_filter, sort_by, descending):
            comp.input(on_filter, filter_in, view_out, show_progress="hidden", api_visibility="private")
        api_filter.click(on_filter, filter_in, view_out, api_name="set_filter", **quick)

        @_user_errors
        def on_view(a, o, only, cov, request: gr.Request):
            return show(wb.set_view(sid(request), a, o, only, cov))

        view_in = [alpha, outlines, only_selected, coverage]
        alpha.release(on_view, view_in, view_out, show_progress="hidden", api_visibility="private")
        for comp in (outlines, only_selected, coverage):
            comp.input(on_view, view_in, view_out, show_progress="hidden", api_visibility="private")
        api_view.click(on_view, view_in, view_out, api_name="set_view", **quick)

        def on_table(request: gr.Request):
            return wb.table(sid(request))

        api_table.click(on_table, None, table, api_name="masks")

        # -- segment everything ----------------------------------------------------------
        amg_in = [points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                  box_nms_thresh, crop_n_layers, min_mask_region_area]

        @_user_errors
        def on_segment_everything(pps, ppb, iou, stab, nms, crops, min_area, request: gr.Request,
                                  progress=gr.Progress()):
            params = dict(points_per_side=pps, points_per_batch=ppb, pred_iou_thresh=iou,
                          stability_score_thresh=stab, box_nms_thresh=nms, crop_n_layers=crops,
                          min_mask_region_area=min_area or 0)
            progress(0.0, desc="Segment everything: first point batch")
            for step in wb.segment_everything(sid(request), **params):
                if not step.final:
                    eta = f", ETA {step.eta_s:.0f} s" if step.eta_s is not None else ""
                    progress((step.done, step.total), desc=f"Segment everything{eta}", unit="batches")
                yield (*show(step.view), step.view.message,
                       gr.Tabs(selected="masks") if step.final else gr.skip())

        # the progress bar shows on the progress box, so the canvas stays visible as masks appear.
        # Not in the model group: a run holds the workbench's model lock for its model calls
        # only, so other people's clicks are answered while it runs, not after the whole run.
        run_amg_btn.click(on_segment_everything, amg_in, [*view_out, amg_progress, tabs],
                          concurrency_limit=2, concurrency_id=EVERYTHING, show_progress="full",
                          show_progress_on=[amg_progress],
                          api_name="segment_everything")

        def on_cancel(request: gr.Request):
            wb.cancel(sid(request))

        # in no group: it must run while a run is going
        cancel_amg_btn.click(on_cancel, None, None, concurrency_limit=None, show_progress="hidden",
                             api_name="cancel")

        # -- duplicates ------------------------------------------------------------------
        @_user_errors
        def on_find_duplicates(thresh, request: gr.Request):
            v = wb.find_duplicates(sid(request), float(thresh))
            return (*show(v), wb.duplicate_rows(sid(request)))

        find_dup_btn.click(on_find_duplicates, [dup_iou], [*view_out, dup_table], api_name="find_duplicates",
                           **quick)

        def resolve(how):
            @_user_errors
            def run(request: gr.Request):
                v = wb.resolve_duplicates(sid(request), how)
                return (*show(v), wb.duplicate_rows(sid(request)))
            return run

        keep_best_btn.click(resolve("keep_best"), None, [*view_out, dup_table], api_name="keep_best", **quick)
        merge_groups_btn.click(resolve("merge"), None, [*view_out, dup_table], api_name="merge_groups",
                               **quick)

        @_user_errors
        def on_dup_row(evt: gr.SelectData, request: gr.Request):
            row = evt.row_value
            if not row or row[0] in (None, ""):
                return show(wb.resend(sid(request)))
            return show(wb.select_duplicates(sid(request), int(row[0])))

        dup_table.select(on_dup_row, None, view_out, api_visibility="private", **quick)

        # -- export and import ---------------------------------------------------------
        @_user_errors
        def on_export(fmt, pending, figures, request: gr.Request):
            out = wb.export(sid(request), fmt, bool(pending), bool(figures))
            # the DownloadButton downloads the value it already holds, so it gets the file
            # here, once the file exists (see docs/gradio6-notes.md §5)
            return (*show(out.view), [str(f) for f in out.files],
                    gr.DownloadButton(value=str(out.coco), interactive=True))

        export_btn.click(on_export, [segmentation, include_pending, with_figures],
                         [*view_out, export_files, download_coco], show_progress="full",
                         show_progress_on=[export_files], api_name="export_coco")

        @_user_errors
        def on_import(path, request: gr.Request):
            if not path:
                return show(wb.resend(sid(request)))
            return show(wb.import_annotations(sid(request), path))

        import_file.upload(on_import, [import_file], view_out, show_progress="minimal",
                           api_name="import_annotations")

        # -- projects ------------------------------------------------------------------
        # outputs of project events: the view, what the browser keeps to resume, the image
        # navigation row, the project list, and the view options the project remembers
        view_opts = [alpha, outlines, only_selected, coverage]
        project_out = [*view_out, resume, nav_row, project_name, *view_opts]

        def show_project(v: View, request: gr.Request, full: bool = False):
            key = sid(request)
            p = wb.project_of(key)
            out = list(show(v))
            if p is None and full:
                out[5] = []
            opts = v.options
            return (*out, wb.resume_state(key), gr.Row(visible=p is not None),
                    gr.Dropdown(choices=wb.project_names(), value=p.name if p else None),
                    opts.alpha, opts.outlines, opts.only_selected, opts.coverage)

        def then_encode(first: View, request: gr.Request):
            """Show the image at once, then its embedding (as the upload does)."""
            yield show_project(first, request)
            if wb.needs_embedding(sid(request)):
                done = wb.encode(sid(request))
                done.message = first.message.removesuffix(COMPUTING) + done.message
                # an API client sees only the last yield: repeat the (small) lists, not the canvas
                done.table = first.table if done.table is None else done.table
                done.progress = first.progress if done.progress is None else done.progress
                yield show_project(done, request)

        @_user_errors
        def on_open_project(name, request: gr.Request):
            yield from then_encode(wb.open_project(sid(request), name or "", encode=False), request)

        open_project_btn.click(on_open_project, [project_name], project_out, concurrency_limit=1,
                               concurrency_id=MODEL, api_name="open_project", **quick)
        project_name.select(on_open_project, [project_name], project_out, concurrency_limit=1,
                            concurrency_id=MODEL, api_visibility="private", **quick)

        @_user_errors
        def on_close_project(request: gr.Request):
            return show_project(wb.close_project(sid(request)), request, full=True)

        close_project_btn.click(on_close_project, None, project_out, api_name="close_project", **quick)

        @_user_errors
        def on_add_images(paths, request: gr.Request):
            if not paths:
                return
            yield from then_encode(wb.add_uploads(sid(request), paths, encode=False), request)

        add_images.upload(on_add_images, [add_images], project_out, concurrency_limit=1, concurrency_id=MODEL,
                          show_progress="full", show_progress_on=[progress_table], api_name="add_images")

        @_user_errors
        def on_add_folder(path, sub, request: gr.Request):
            yield from then_encode(wb.add_folder(sid(request), path, recursive=bool(sub), encode=False),
                                   request)

        add_folder_btn.click(on_add_folder, [folder, recursive], project_out, concurrency_limit=1,
                             concurrency_id=MODEL, show_progress="full", show_progress_on=[progress_table],
                             api_name="add_folder")

        def go(delta):
            @_user_errors
            def run(request: gr.Request):
                yield from then_encode(wb.step_image(sid(request), delta, encode=False), request)
            return run

        model_quick = {"concurrency_limit": 1, "concurrency_id": MODEL, **quick}
        next_image_btn.click(go(1), None, project_out, api_name="next_image", **model_quick)
        prev_image_btn.click(go(-1), None, project_out, api_name="prev_image", **model_quick)

        @_user_errors
        def on_go_to(position, request: gr.Request):
            yield from then_encode(wb.go_to_position(sid(request), int(position), encode=False), request)

        api_go.click(on_go_to, [api_position], project_out, api_name="go_to_image", **model_quick)

        @_user_errors
        def on_progress_row(evt: gr.SelectData, request: gr.Request):
            row = evt.row_value
            if not row or row[1] in (None, ""):
                yield show_project(wb.resend(sid(request)), request)
                return
            yield from then_encode(wb.go_to_position(sid(request), int(row[1]) - 1, encode=False), request)

        progress_table.select(on_progress_row, None, project_out, api_visibility="private", **model_quick)

        @_user_errors
        def on_done(request: gr.Request):
            return show(wb.toggle_done(sid(request)))

        done_btn.click(on_done, None, view_out, api_name="toggle_done", **quick)

        @_user_errors
        def on_export_project(request: gr.Request):
            path = wb.export_project(sid(request))
            return gr.DownloadButton(value=str(path), interactive=True)

        export_project_btn.click(on_export_project, None, download_project, api_name="export_project",
                                 show_progress="minimal")

        def on_progress(request: gr.Request):
            return wb.progress_rows(sid(request))

        api_progress.click(on_progress, None, progress_table, api_name="progress")

        # -- sessions ------------------------------------------------------------------
        def on_load(state, request: gr.Request):
            # a reloaded page (new session hash) or a restarted server: reopen its project
            yield from then_encode(wb.resume(sid(request), state, encode=False), request)

        # not in the model group: a page must not wait for another tab's segment everything
        # to show; its encoder call still takes the workbench's model lock
        demo.load(on_load, [resume], project_out, api_visibility="private")

        def on_unload(request: gr.Request):
            wb.free(sid(request))

        demo.unload(on_unload)

        # an open tab keeps its session however long it sits idle: the idle clean-up is for
        # tabs that went without an unload and for API clients, which have no heartbeat
        def on_heartbeat(request: gr.Request):
            wb.keep_alive(sid(request))

        heartbeat = gr.Timer(min(300.0, wb.limits.idle_seconds / 3))
        heartbeat.tick(on_heartbeat, None, None, show_progress="hidden", concurrency_limit=None,
                       api_visibility="private")

    demo.queue(max_size=wb.limits.max_queue)
    demo.workbench = wb
    return demo
