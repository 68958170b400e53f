"""The annotation app's logic: one ``Workbench`` per server, one ``Session`` per browser tab.

Every user action is a ``Workbench`` method that takes a session id and plain arguments
and returns a ``View`` (plain data: the canvas image, the status line, a message, SAM's
candidates, the mask table). ``annotator.app.ui`` only maps Gradio components to those
arguments and a View back to components, so all of this is tested without a browser.

The Workbench is a facade: each method locks the session, calls one concern module
(``images``, ``prompting``, ``editing``, ``review``, ``everything``, ``exchange``,
``projects``) and renders the result (``view``). The concerns are plain functions over a
``Session`` (``state``) and the shared ``Context`` (model, lock, limits, projects).

Per-session state lives in a bounded ``SessionStore`` keyed by Gradio's session hash:
nothing in module globals, nothing deep-copied per event. Heavy things are shared, not
copied: the model and its embedding cache belong to the workbench; a session holds a
reference to its image's embedding and its ``AnnotationDocument`` (masks as RLE).

Coordinates: clicks arrive in canvas pixels; a canvas larger than ``max_display_side`` is
a downscaled copy, so clicks are mapped to original image pixels at once. Prompts, masks
and exports are always in original pixels.

Limits (``annotator.limits.Limits``): image pixels, masks per image, memory per session,
sessions held, idle time, imported JSON size. An action that would pass one is refused
with a message naming the limit and leaves the session as it was; idle sessions are freed
by a background sweep, since an idle session sends no request that could free it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from annotator.annotations import markers
from annotator.app import canvas_link, concepts, editing, everything, exchange, images, memory, projects, prompting
from annotator.app import review as reviewing
from annotator.app import view as views
from annotator.app.classes import class_list
from annotator.app.context import Context
from annotator.app.sessions import SessionStore
from annotator.app.state import (  # noqa: F401  (re-exported: the UI, tests and benchmarks import them here)
    AMG_DEFAULTS,
    COMPUTING,
    KEEP_EXPORTS,
    MAX_DOCUMENTS,
    MODES,
    REVIEW_FILTERS,
    SORT_KEYS,
    TABLE_HEADERS,
    AmgStep,
    Export,
    MaskFilter,
    OpenProject,
    Session,
    View,
    ViewOptions,
    WorkbenchError,
)
from annotator.limits import Limits
from annotator.models.loading import BackendInfo
from annotator.projects.folders import FolderPolicy
from annotator.projects.library import ProjectLibrary
from annotator.projects.prefetch import Prefetcher


def _shared(name: str) -> property:
    """A name for what the shared ``Context`` holds (tests may replace it, e.g. the limits)."""
    return property(lambda self: getattr(self.ctx, name), lambda self, value: setattr(self.ctx, name, value))


class Workbench:
    """Owns the shared context (model, lock, limits, projects) and the sessions; its
    methods are the app."""

    def __init__(
        self,
        segmenter,
        info: BackendInfo,
        *,
        limits: Limits | None = None,
        max_display_side: int = markers.DISPLAY_MAX_SIDE,
        projects: ProjectLibrary | None = None,
        folders: FolderPolicy | None = None,
        prefetch: bool = True,
    ):
        self.ctx = Context.create(
            segmenter,
            info,
            limits=limits,
            max_display_side=max_display_side,
            projects=projects,
            folders=folders,
            prefetch=prefetch,
        )
        self.ctx.finalize_with(self)
        self.sessions: SessionStore[Session] = SessionStore(
            Session,
            max_sessions=self.ctx.limits.max_sessions,
            idle_seconds=self.ctx.limits.idle_seconds,
            # a freed or evicted session's prefetch goes with it
            on_evict=functools.partial(_release_session, prefetcher=self.ctx.prefetcher),
        )
        # idle sessions are freed by a sweep; the thread holds the store weakly and stops
        # when the workbench goes
        stop = threading.Event()
        interval = min(60.0, max(0.1, self.ctx.limits.idle_seconds / 4))
        threading.Thread(
            target=_sweep_sessions,
            args=(weakref.ref(self.sessions), stop, interval),
            name="annotator-session-sweep",
            daemon=True,
        ).start()
        weakref.finalize(self, stop.set)

    # what the shared context holds, by the names callers know
    segmenter = _shared("segmenter")
    browser_canvas = _shared("browser_canvas")
    info = _shared("info")
    limits = _shared("limits")
    max_display_side = _shared("max_display_side")
    model_lock = _shared("model_lock")
    projects = _shared("projects")
    folders = _shared("folders")
    prefetcher = _shared("prefetcher")
    export_root = _shared("export_root")

    # -- sessions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, sid: str):
        why = self.sessions.dropped_because(sid)
        s = self.sessions.get(sid)
        with s.lock:
            if why is not None:
                s.notice = self._dropped_text(why)
            yield s

    def _dropped_text(self, why: str) -> str:
        if why == "full":
            limit = (
                f"the server holds at most {self.ctx.limits.max_sessions} sessions at once "
                "(--max-sessions, ANNOTATOR_MAX_SESSIONS) and this one was the least recently used"
            )
        else:
            limit = (
                f"it was idle longer than {self.ctx.limits.idle_seconds / 60:g} minutes "
                "(--idle-minutes, ANNOTATOR_IDLE_MINUTES)"
            )
        return (
            f"This tab's earlier session was freed: {limit}. Open your image again; "
            "a project (Project tab) keeps every saved mask on disk."
        )

    def _act(self, sid: str, action, *args, **kwargs) -> View:
        """Run one concern function on the locked session and render the View."""
        with self._session(sid) as s:
            return views.make_view(self.ctx, s, action(s, *args, **kwargs))

    def session(self, sid: str) -> Session:
        """The session's state (created on first use); for tests and benchmarks only: the
        UI reads what it needs through the methods below."""
        return self.sessions.get(sid)

    def free(self, sid: str) -> None:
        """Forget a session (the browser tab closed)."""
        s = self.sessions.peek(sid)
        if s is not None:
            _release_session(sid, s, self.ctx.prefetcher)
        self.sessions.free(sid)

    def keep_alive(self, sid: str) -> bool:
        """The browser tab is still open: its session is not idle (False if already freed)."""
        return self.sessions.touch(sid)

    def session_bytes(self, sid: str) -> int:
        """Memory the session holds (image, embedding, prompt, canvas, masks of every image)."""
        with self._session(sid) as s:
            return memory.session_bytes(s)

    def needs_embedding(self, sid: str) -> bool:
        """An image is shown whose embedding is not computed yet (e.g. after a page reload)."""
        s = self.sessions.peek(sid)
        return s is not None and s.image is not None and s.embedding is None

    # -- image ---------------------------------------------------------------------------
    def open_image(self, sid: str, source, name: str | None = None) -> View:
        """Load an image (path, bytes, PIL or array) and compute its embedding; the View is
        complete (nothing left out as unchanged)."""
        self.load(sid, source, name)
        s = self.sessions.get(sid)
        s.sent_canvas_key = s.sent_table_key = None
        return self.encode(sid)

    def load(self, sid: str, source, name: str | None = None) -> View:
        """Show an image; the embedding comes from ``encode``. Each image keeps its own
        document for the session's life: opening an image again brings its masks back."""
        image, name, notes = images.read(self.ctx, source, name)
        return self._act(sid, lambda s: images.open_image(self.ctx, s, image, name, notes))

    def encode(self, sid: str) -> View:
        view = self._act(sid, lambda s: images.encode(self.ctx, s, sid))
        projects.prefetch_next(self.ctx, sid, self.sessions.peek(sid))  # in a project: the next image
        return view

    # -- prompting -----------------------------------------------------------------------
    def set_mode(self, sid: str, mode: str) -> View:
        return self._act(sid, prompting.set_mode, mode)

    def click_display(self, sid: str, x: float, y: float, mode: str | None = None) -> View:
        """A click on the canvas, in canvas pixels (what the browser reports)."""
        with self._session(sid) as s:
            ix, iy = prompting.to_image_xy(s, x, y)
        return self.click(sid, ix, iy, mode)

    def click(self, sid: str, x: float, y: float, mode: str | None = None) -> View:
        """A click at (x, y) in original image pixels, in ``mode`` (default: the session's)."""
        return self._act(sid, lambda s: prompting.click(self.ctx, s, x, y, mode))

    def choose_candidate(self, sid: str, position: int) -> View:
        return self._act(sid, prompting.choose_candidate, position)

    def clear_prompt(self, sid: str) -> View:
        return self._act(sid, prompting.clear_prompt)

    def accept(self, sid: str, label: str | None = None) -> View:
        """Add the prompt's current mask to the document (accepted, with ``label``)."""
        return self._act(sid, lambda s: prompting.accept(self.ctx, s, label))

    # -- selecting and editing -----------------------------------------------------------
    def select_mask(self, sid: str, ann_id: int, mode: str = "toggle") -> View:
        """Select a mask by id (a click on its table row toggles it)."""
        return self._act(sid, editing.select_mask, ann_id, mode)

    def clear_selection(self, sid: str) -> View:
        return self._act(sid, editing.clear_selection)

    def select_shown(self, sid: str) -> View:
        return self._act(sid, editing.select_shown)

    def merge(self, sid: str) -> View:
        return self._act(sid, editing.merge)

    def subtract(self, sid: str) -> View:
        return self._act(sid, editing.subtract)

    def delete(self, sid: str) -> View:
        return self._act(sid, editing.delete)

    def toggle_visibility(self, sid: str) -> View:
        return self._act(sid, editing.toggle_visibility)

    def relabel(self, sid: str, label: str | None) -> View:
        return self._act(sid, editing.relabel, label)

    def undo(self, sid: str) -> View:
        """Undo the last prompt point while prompting, otherwise the last document edit."""
        return self._act(sid, lambda s: editing.undo(self.ctx, s))

    def redo(self, sid: str) -> View:
        return self._act(sid, editing.redo)

    # -- the browser canvas ----------------------------------------------------------------
    def remove_point(self, sid: str, index: int) -> View:
        """Remove prompt point ``index`` (0-based, in the order they were added)."""
        return self._act(sid, lambda s: prompting.remove_point(self.ctx, s, index))

    def drag_box(self, sid: str, x0: float, y0: float, x1: float, y1: float) -> View:
        """A box prompt drawn in one drag (image pixels; the same as two clicks in box mode)."""
        return self._act(sid, lambda s: prompting.drag_box(self.ctx, s, x0, y0, x1, y1))

    def paint(self, sid: str, ann_id: int, strokes: list) -> View:
        """Brush / eraser strokes (``{"points", "radius", "erase"}``, image pixels) on one
        mask, one undoable edit."""
        return self._act(sid, editing.paint, ann_id, strokes)

    def canvas_actions(self, sid: str, message, label: str | None = None) -> View:
        """The browser canvas's actions (points, boxes, strokes, ...; ``canvas_frames``) in
        order, answered by one View whose frame acknowledges them."""
        return self._act(sid, lambda s: canvas_link.apply(self.ctx, s, message, label))

    def canvas_direct(self, message) -> dict | None:
        """``canvas_actions`` for the canvas's script calling the server directly (a server
        function, outside Gradio's queue: no queue round trip, no page-wide status updates
        before the mask is drawn). The session is the one whose frames carry the message's
        ``channel``; the label comes in the message. Returns the next frame, or None when no
        live session has that channel or the session cannot act (the page then sends the
        actions as an event, which reports why)."""
        if not isinstance(message, dict):
            return None
        sid = canvas_link.sid_for_channel(
            ((k, self.sessions.peek(k)) for k in self.sessions.keys()), message.get("channel")
        )
        if sid is None:
            return None
        label = message.get("label")
        label = label if isinstance(label, str) else None
        # the session found, never a new one: freed since the lookup, it stays freed
        s = self.sessions.peek(sid)
        if s is None or not self.sessions.touch(sid):
            return None
        try:
            with s.lock:
                frame = views.frame_after(s, canvas_link.apply(self.ctx, s, message, label))
        except WorkbenchError:
            return None
        return frame()

    def canvas_image(self, key: str) -> np.ndarray | None:
        """The image a browser canvas shows under ``key`` (for its full-resolution crops)."""
        return canvas_link.image_for_key((self.sessions.peek(k) for k in self.sessions.keys()), key)

    def classes(self, sid: str):
        """The session's class list (in a project, the project's categories)."""
        with self._session(sid) as s:
            return class_list(s)

    # -- find all (SAM 3 concepts) --------------------------------------------------------
    def find_all(
        self,
        sid: str,
        text: str | None = None,
        boxes=None,
        box_labels=None,
        threshold: float = 0.5,
        exemplar: str = "none",
    ) -> View:
        """Every instance of ``text`` and/or of exemplar ``boxes`` (x0, y0, x1, y1 in image
        pixels; ``box_labels`` 1 = like this, 0 = not like this) as pending masks labelled with
        the text, best first, one undoable step (``annotator.app.concepts``). ``exemplar``
        "positive"/"negative" adds the box drawn on the canvas as one. Needs SAM 3."""

        def act(s):
            b, labels = concepts.with_prompt_box(s, boxes, box_labels, exemplar)
            return concepts.find_all(self.ctx, s, text, b, labels, threshold)

        return self._act(sid, act)

    def find_all_in_project(self, sid: str, text: str | None, threshold: float = 0.5) -> Iterator[AmgStep]:
        """Find all ``text`` in every image of the open project, a step per image (each saved
        before its step: pending masks labelled with the text); images already searched for
        the text and images marked done are skipped (``annotator.app.concepts``)."""
        return concepts.run_project(self.ctx, self.sessions.get(sid), text, threshold)

    def cancel_find_all(self, sid: str) -> None:
        """Stop this session's "find all in every image" after the image it is on (kept)."""
        s = self.sessions.peek(sid)
        if s is not None:
            s.find_cancel.set()

    # -- review --------------------------------------------------------------------------
    def review(self, sid: str, state: str) -> View:
        """Mark the mask under review (or the selection) and move to the next pending one."""
        return self._act(sid, reviewing.review, state)

    def step(self, sid: str, delta: int = 1) -> View:
        """Move the review cursor to the next (``delta`` > 0) or previous mask shown."""
        return self._act(sid, reviewing.step, delta)

    def set_filter(
        self,
        sid: str,
        min_iou: float = 0.0,
        min_stability: float = 0.0,
        min_area: int = 0,
        review: str = "all",
        sort_by: str = "id",
        descending: bool = False,
    ) -> View:
        return self._act(sid, reviewing.set_filter, min_iou, min_stability, min_area, review, sort_by, descending)

    def find_duplicates(self, sid: str, iou_thresh: float = 0.8) -> View:
        return self._act(sid, reviewing.find_duplicates, iou_thresh)

    def duplicate_rows(self, sid: str) -> list[list]:
        with self._session(sid) as s:
            return reviewing.duplicate_rows(s)

    def select_duplicates(self, sid: str, group: int) -> View:
        return self._act(sid, reviewing.select_duplicates, group)

    def resolve_duplicates(self, sid: str, how: str = "keep_best", group: int | None = None) -> View:
        return self._act(sid, reviewing.resolve_duplicates, how, group)

    # -- segment everything --------------------------------------------------------------
    def segment_everything(self, sid: str, **params) -> Iterator[AmgStep]:
        """SAM's automatic mask generator on the session's image: a step per point batch,
        then the final step with the masks in the document (``everything.run``)."""
        return everything.run(self.ctx, self.sessions.get(sid), **params)

    def cancel(self, sid: str) -> None:
        """Ask a running "segment everything" of this session to stop after its current batch."""
        s = self.sessions.peek(sid)
        if s is not None:
            s.cancel.set()

    # -- export and import ---------------------------------------------------------------
    def export(
        self,
        sid: str,
        segmentation: str = "rle",
        include_pending: bool = True,
        figures: bool = True,
        out_dir: str | Path | None = None,
        tolerance: float = 0.0,
    ) -> Export:
        """The masks as ``segmentation`` (COCO RLE or polygons, YOLO, labelme, VOC; checked by
        reading them back), label PNGs, the overlay and review figures, in a fresh folder."""
        with self._session(sid) as s:
            files, message = exchange.export(self.ctx, s, segmentation, include_pending, figures, out_dir, tolerance)
            return Export(files=files, coco=files[0], view=views.make_view(self.ctx, s, message))

    def import_annotations(self, sid: str, path: str | Path) -> View:
        """Add the masks of a COCO file (or SAM amg.py output) for the current image, for review."""
        return self._act(sid, lambda s: exchange.import_annotations(self.ctx, s, path))

    # -- projects ------------------------------------------------------------------------
    def project_names(self) -> list[str]:
        return self.projects.names()

    def open_project(
        self, sid: str, name: str, *, image_id: int | None = None, create: bool = True, encode: bool = True
    ) -> View:
        """Open (or create) the project ``name`` and show ``image_id``, else the image it was
        left at, else its first image. ``encode=False`` leaves the embedding to ``encode``."""
        store = projects.open_store(self.ctx, name, create)
        with self._session(sid) as s:
            target = projects.enter(self.ctx, s, name, store, image_id)
            if target is None:
                return views.make_view(self.ctx, s, projects.empty_message(s))
        try:
            return self.go_to_image(sid, target, encode=encode)
        except WorkbenchError as e:  # e.g. a server file that moved: the project stays open
            return self._act(sid, projects.show_failed, target, e)

    def close_project(self, sid: str) -> View:
        """Back to single images (the project's work is all saved already)."""
        return self._act(sid, projects.close)

    def project_of(self, sid: str) -> OpenProject | None:
        s = self.sessions.peek(sid)
        return None if s is None else s.project

    def resume_state(self, sid: str) -> dict | None:
        """What the browser keeps to reopen this session's place after a reload/restart."""
        return projects.resume_state(self.sessions.peek(sid))

    def resume(self, sid: str, state, *, encode: bool = True) -> View:
        """Reopen where a reloaded page left off (``state`` from ``resume_state``, kept in
        the browser); a page with nothing to resume, or a project gone, gets a plain View."""
        s = self.sessions.get(sid)
        if s.project is None and isinstance(state, dict) and state.get("project"):
            image = state.get("image")
            try:
                return self.open_project(
                    sid,
                    str(state["project"]),
                    create=False,
                    encode=encode,
                    image_id=int(image) if isinstance(image, int) else None,
                )
            except WorkbenchError as e:
                view = self.resend(sid)
                view.message = f"Could not reopen project {state['project']!r}: {e}"
                return view
        return self.resend(sid)

    def go_to_image(self, sid: str, image_id: int, *, encode: bool = True) -> View:
        """Show one image of the open project with its saved masks (and, with ``encode``,
        its embedding); then prefetch the next image's embedding in the background."""
        with self._session(sid) as s:
            msg = projects.show(self.ctx, s, image_id, encode)
            if not encode:
                return views.make_view(self.ctx, s, msg)
        view = self.encode(sid)
        view.message = msg + view.message
        return view

    def step_image(self, sid: str, delta: int = 1, *, encode: bool = True) -> View:
        """The next (``delta`` > 0) or previous image of the project, wrapping around."""
        with self._session(sid) as s:
            target = projects.step_target(s, delta)
        return self.go_to_image(sid, target, encode=encode)

    def go_to_position(self, sid: str, position: int, *, encode: bool = True) -> View:
        """The image at ``position`` (0-based) in the progress list (a click on its row)."""
        with self._session(sid) as s:
            target = projects.position_target(s, position)
        return self.go_to_image(sid, target, encode=encode)

    def add_uploads(self, sid: str, paths, names=None, *, encode: bool = True, show: bool = False) -> View:
        """Add uploaded files to the project (their bytes are stored in it); shows the first
        one added when ``show`` or when no image is shown yet. Unreadable files are skipped
        and named."""
        sources, labels, unread = projects.read_uploads(paths, names)
        return self._add(sid, sources, labels, unread, encode, show)

    def add_folder(self, sid: str, folder: str, *, recursive: bool = False, encode: bool = True) -> View:
        """Add the images of a server folder (referenced in place), if the operator allowed it."""
        return self._add(sid, projects.folder_images(self.ctx, folder, recursive), None, {}, encode, False)

    def _add(self, sid: str, sources: list, names: list | None, unread: dict, encode: bool, show: bool) -> View:
        with self._session(sid) as s:
            msg, infos = projects.add(s, sources, names, unread)
            if not show and s.project.image_id is not None:
                return views.make_view(self.ctx, s, msg)
        view = self.go_to_image(sid, infos[0].id, encode=encode)
        view.message = msg + " " + view.message
        return view

    def set_done(self, sid: str, done: bool = True) -> View:
        """Mark the shown image done (or pending again)."""
        return self._act(sid, projects.set_done, done)

    def toggle_done(self, sid: str) -> View:
        """Done <-> pending, read and written under the session's lock (one toggle at a time)."""
        return self._act(sid, lambda s: projects.set_done(s, not projects.is_done(s)))

    def export_project(
        self, sid: str, include_rejected: bool = False, fmt: str = "coco-rle", tolerance: float = 0.0
    ) -> Path:
        """The whole project as one COCO file, or a zip (YOLO, labelme, VOC) with its images,
        in a fresh folder for download."""
        with self._session(sid) as s:
            projects.need_project(s)
            return projects.export(self.ctx, s, exchange.export_folder(self.ctx, s), include_rejected, fmt, tolerance)

    def progress_rows(self, sid: str) -> list[list]:
        """The project's images: marker (▶ shown), number, name, status, masks, accepted."""
        with self._session(sid) as s:
            return projects.progress_rows(s)

    # -- view options and reading --------------------------------------------------------
    def set_view(
        self,
        sid: str,
        alpha: float | None = None,
        outlines: bool | None = None,
        only_selected: bool | None = None,
        coverage: bool | None = None,
    ) -> View:
        return self._act(sid, views.set_options, alpha, outlines, only_selected, coverage)

    def table_order(self, s: Session) -> list:
        return views.table_order(s)

    def table(self, sid: str) -> list[list]:
        with self._session(sid) as s:
            return views.table(s)

    def status(self, sid: str) -> str:
        with self._session(sid) as s:
            return views.status(self.ctx, s)

    def canvas(self, sid: str) -> np.ndarray | None:
        """The canvas as it looks now (display pixels)."""
        with self._session(sid) as s:
            return views.canvas(self.ctx, s)

    def resend(self, sid: str) -> View:
        """A full View (nothing left out as unchanged), e.g. for a reloaded page."""
        with self._session(sid) as s:
            views.forget_sent(s)
            return views.make_view(self.ctx, s, "")

    def project_name(self, sid: str) -> str | None:
        """The name of the session's open project; None outside a project."""
        p = self.project_of(sid)
        return None if p is None else p.name


def _release_session(sid: str, s: Session, prefetcher: Prefetcher | None = None) -> None:
    """What a session holds outside the store: a running generator, its export folders,
    its prefetch."""
    s.cancel.set()  # a running "segment everything" stops at its next batch
    s.find_cancel.set()  # a running "find all in every image" at its next image
    if prefetcher is not None:
        prefetcher.cancel(sid)
    for folder in s.exports:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep_sessions(store_ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        store = store_ref()
        if store is None:
            return
        store.sweep()
        del store
