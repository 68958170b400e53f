"""The Gradio app: the page's layout, one module per tab, then each tab's events; the logic is
``annotator.app.workbench``.

Every event calls one ``Workbench`` method with the browser session's hash and plain
values, and shows the ``View`` it returns (``common.Outputs``). Model events (upload,
clicks, segment everything) take the workbench's model lock, one model call at a time;
clicks and uploads share one concurrency group of ``Limits.model_workers`` sessions at a
time (drawing and encoding overlap; the decoder calls of clicks that wait together run as one
batch), while segment everything has its own and holds the lock only for its model calls, so
other sessions' clicks are answered while it runs. A session's events run in the order they
came (its lock is ordered); clicks use ``trigger_mode="multiple"`` so fast clicks are queued,
never dropped.
``.select`` events cannot be driven by ``gradio_client``, so the same logic is also exposed
through hidden buttons with explicit API names (``/click``, ``/select_mask``, ...; ``api``).

``build_app`` returns the Blocks; Gradio 6 takes theme, css and js in ``launch()``, so
pass ``launch_kwargs()`` there (``annotator serve`` does): it also carries the upload size
limit and the paths the server must never serve. The queue holds at most
``Limits.max_queue`` waiting events; more are refused at once ("queue is full").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from annotator.app.ui import (
    api,
    canvas,
    everything_tab,
    export_tab,
    find_all_tab,
    image_tab,
    masks_tab,
    project_tab,
)
from annotator.app.ui.common import Outputs, sid, static_text
from annotator.app.workbench import Workbench
from annotator.limits import Limits
from annotator.models.checkpoints import cache_dir
from annotator.models.loading import BackendInfo
from annotator.projects.folders import FolderPolicy
from annotator.projects.library import ProjectLibrary

ASSETS = Path(__file__).resolve().parents[3] / "assets"  # the checkout's assets/ folder
# The browser keeps {"project": name, "image": id} (encrypted in localStorage) to reopen its
# place after a reload or a server restart; the secret must not change between starts (the
# default is random per start), and the value is no secret (a name and a number).
RESUME_KEY = "annotator-resume"
RESUME_SECRET = "annotator-resume-v1"


def launch_kwargs(limits: Limits | None = None, info: BackendInfo | None = None, private: Sequence = ()) -> dict:
    """What ``Blocks.launch`` needs besides host and port (Gradio 6 wants these there).

    Gradio serves only its upload and cache folders (no ``allowed_paths`` are given); the
    checkpoint, the checkpoint cache and the ``private`` folders (the projects) are blocked
    as well, so that even an operator's ``GRADIO_ALLOWED_PATHS`` cannot expose them
    (blocked paths win over allowed ones).

    Gradio's run history is off: it keeps every call's inputs and outputs (here the canvas
    frames, with the image and mask data) in the browser's localStorage, re-written whole
    at each status update; by the 30th click of a session the page spent ~1 s per click
    on it, and it would leave people's images in the browser."""
    limits = limits or Limits()
    theme = gr.themes.Default(
        primary_hue="blue", neutral_hue="slate", spacing_size="sm", radius_size="sm", text_size="sm"
    )
    blocked = [str(cache_dir())]
    if info is not None and info.checkpoint:
        blocked.append(str(Path(info.checkpoint).resolve()))
    blocked += [str(Path(p).resolve()) for p in private]
    return {
        "css": static_text("app.css"),
        "js": static_text("shortcuts.js"),
        "theme": theme,
        "max_file_size": limits.upload_bytes,
        "blocked_paths": blocked,
        "run_history": False,
    }


def build_app(
    segmenter,
    info: BackendInfo,
    *,
    workbench: Workbench | None = None,
    examples: list[str] | None = None,
    limits: Limits | None = None,
    projects_dir: str | Path | None = None,
    allow_folders=(),
) -> gr.Blocks:
    """The app's Blocks. ``demo.workbench`` is its ``Workbench`` (for tests). Projects live
    in ``projects_dir``; ``allow_folders`` are the server folders images may be added from
    (both only used when no ``workbench`` is given)."""
    wb = workbench or Workbench(
        segmenter,
        info,
        limits=limits,
        projects=ProjectLibrary(projects_dir),
        folders=FolderPolicy.from_env(allow_folders),
    )
    wb.browser_canvas = True  # the page's canvas draws in the browser: Views carry its frames
    if examples is None:
        examples = [str(p) for p in sorted(ASSETS.glob("*.jpg"))]

    with gr.Blocks(title="annotator · Segment Anything", fill_width=True) as demo:
        # -- layout: no events here --
        with gr.Row(equal_height=True):
            gr.Markdown("### annotator", elem_id="title")
            status = gr.Textbox(
                info.status,
                label="Status",
                show_label=False,
                interactive=False,
                container=False,
                elem_id="status",
                scale=8,
            )
        with gr.Row():
            col = canvas.layout(wb)
            # the side panel: narrow, so the canvas has most of the width (60% at 1366 px)
            with (
                gr.Column(scale=3, min_width=380),
                gr.Tabs(
                    selected="image",
                    overflow_behavior="wrap",  # every tab in sight in the narrow panel
                ) as tabs,
            ):
                image = image_tab.layout(examples, wb.limits)
                project = project_tab.layout(wb)
                masks = masks_tab.layout()
                everything = everything_tab.layout()
                find_all = find_all_tab.layout(wb)
                export = export_tab.layout()
        hidden = api.layout()
        resume = gr.BrowserState(None, storage_key=RESUME_KEY, secret=RESUME_SECRET)
        heartbeat = gr.Timer(min(300.0, wb.limits.idle_seconds / 3))

        out = Outputs(
            canvas=col.canvas,
            status=status,
            message=col.message,
            candidates=col.candidates,
            table=masks.table,
            progress=project.progress,
            mode=hidden.mode,
            tabs=tabs,
            resume=resume,
            nav_row=col.nav_row,
            project_name=project.name,
            alpha=hidden.alpha,
            outlines=hidden.outlines,
            only_selected=hidden.only_selected,
            coverage=hidden.coverage,
        )

        # -- events: no components here --
        image_tab.wire(image, out, wb, examples)
        canvas.wire(col, out, hidden, wb)
        masks_tab.wire(masks, col, out, hidden, wb)
        everything_tab.wire(everything, out, wb)
        find_all_tab.wire(find_all, out, wb)
        export_tab.wire(export, out, wb)
        project_tab.wire(project, col, out, hidden, wb)
        _wire_session(demo, heartbeat, out, wb)

    # other events (accept, select, ...) of different sessions may overlap too: each session's
    # own events still run one at a time, in order
    demo.queue(max_size=wb.limits.max_queue, default_concurrency_limit=wb.limits.model_workers)
    demo.workbench = wb
    return demo


def _wire_session(demo: gr.Blocks, heartbeat: gr.Timer, out: Outputs, wb: Workbench) -> None:
    """A page's life: it reopens its place on load, keeps its session while open, frees it
    when closed."""

    def on_load(state, request: gr.Request):
        # a reloaded page (new session hash) or a restarted server: reopen its project
        key = sid(request)
        yield from project_tab.then_encode(out, wb, key, wb.resume(key, state, encode=False))

    # not in the model group: a page must not wait for another tab's segment everything
    # to show; its encoder call still takes the workbench's model lock
    demo.load(on_load, [out.resume], out.project, api_visibility="private")

    def on_unload(request: gr.Request):
        wb.free(sid(request))

    demo.unload(on_unload)

    # an open tab keeps its session however long it sits idle: the idle clean-up is for
    # tabs that went without an unload and for API clients, which have no heartbeat
    def on_heartbeat(request: gr.Request):
        wb.keep_alive(sid(request))

    heartbeat.tick(on_heartbeat, None, None, show_progress="hidden", concurrency_limit=None, api_visibility="private")
