"""The annotation app's logic: one ``Workbench`` per server, one ``Session`` per browser tab.

Every user action is a ``Workbench`` method that takes a session id and plain arguments
and returns a ``View`` (plain data: the canvas image, the status line, a message, SAM's
candidates, the mask table). ``annotator.app.ui`` only maps Gradio components to those
arguments and a View back to components, so all of this is tested without a browser.

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
import math
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from annotator.annotations import markers as cv
from annotator.formats import coco, labels
from annotator.annotations import redundancy, render
from annotator.formats import figures as figs
from annotator.amg.generator import Cancelled, MaskGenerator
from annotator.amg.params import APP_DEFAULTS
from annotator.models.loading import BackendInfo
from annotator.models.embeddings import image_key
from annotator.formats.filenames import safe_name, safe_stem
from annotator.formats.images import ImageError, ImageTooLarge, as_rgb_array, load_image
from annotator.limits import Limits, human_bytes
from annotator.annotations.document import AnnotationDocument, next_in_stack
from annotator.projects.store import ConflictError, ProjectError
from annotator.projects.library import FolderPolicy, ModelLock, Prefetcher, ProjectLibrary, ProjectNameError
from annotator.models.prompt import SAME_PIXEL, Prompt, click as prompt_click, remove_point, undo_last
from annotator.annotations.rle import normalize as to_rle
from annotator.app import canvas_link
from annotator.app.sessions import SessionStore
from annotator.models.zerogpu import gpu

MODES = ("positive", "negative", "box", "select")
COMPUTING = "Computing the image embedding…"
MAX_DOCUMENTS = 16  # per session: empty documents kept for reopening (ones with masks are all kept)
KEEP_EXPORTS = 3  # per session: export folders kept for download
EMBEDDING_BYTES = 256 * 64 * 64 * 4  # one SAM image embedding (float32), every model size
SORT_KEYS = ("id", "predicted_iou", "stability_score", "area")
REVIEW_FILTERS = ("all", "pending", "accepted", "rejected")
PREVIEW_COLOR_BASE = 1 << 20  # palette keys for masks still being found, apart from real ids
# "Segment everything" parameters the app exposes: SAM's names and defaults
AMG_DEFAULTS = APP_DEFAULTS
# first column: ▶ the mask under review, ● selected, ◌ hidden
TABLE_HEADERS = ["", "id", "label", "source", "IoU", "stab.", "area", "review"]


class WorkbenchError(ValueError):
    """A user action cannot be done as asked; the message says what to do instead."""


@dataclass
class ViewOptions:
    alpha: float = 0.5
    outlines: bool = True
    only_selected: bool = False
    coverage: bool = False


@dataclass
class MaskFilter:
    """Which masks the canvas and table show, and in what order. Changing it never
    re-runs anything: it is applied to the document's records."""

    min_iou: float = 0.0
    min_stability: float = 0.0
    min_area: int = 0
    review: str = "all"
    sort_by: str = "id"
    descending: bool = False

    def keeps(self, ann) -> bool:
        if self.review != "all" and ann.review != self.review:
            return False
        if ann.area < self.min_area:
            return False
        # a mask without a score (prompted with GrabCut, imported) is never hidden by one
        if self.min_iou > 0 and ann.predicted_iou is not None and ann.predicted_iou < self.min_iou:
            return False
        if (self.min_stability > 0 and ann.stability_score is not None
                and ann.stability_score < self.min_stability):
            return False
        return True

    def sort(self, anns: list) -> list:
        key = self.sort_by
        if key == "id":
            return sorted(anns, key=lambda a: a.id, reverse=self.descending)
        present = [a for a in anns if getattr(a, key) is not None]
        missing = [a for a in anns if getattr(a, key) is None]
        return sorted(present, key=lambda a: (getattr(a, key), a.id), reverse=self.descending) + missing


@dataclass
class OpenProject:
    """A session's open project: which image it shows and what of it is saved."""

    name: str
    store: object  # annotator.projects.store.Project
    image_id: int | None = None
    doc: AnnotationDocument | None = None  # the document of image_id (None: another image is shown)
    saved_version: int = 0  # doc.version when last saved
    rev: int = 0  # the store's revision of image_id that doc holds (for save(base_rev=...))
    saved_view: tuple | None = None
    rows_key: object = None  # what the progress list was last sent for
    summary: str = ""  # the status line's project part, updated with the progress list


@dataclass
class Session:
    image: np.ndarray | None = None
    name: str = ""
    scale: float = 1.0  # display pixels per image pixel
    embedding: object | None = None
    doc: AnnotationDocument | None = None
    prompt: Prompt = field(default_factory=Prompt)
    mode: str = "positive"
    view: ViewOptions = field(default_factory=ViewOptions)
    filter: MaskFilter = field(default_factory=MaskFilter)
    cursor: int | None = None  # triage: the mask under review
    last_pick: tuple[float, float, int] | None = None  # select mode: for cycling nested masks
    cancel: threading.Event = field(default_factory=threading.Event)
    amg_params: dict = field(default_factory=dict)
    preview: list = field(default_factory=list)  # RLEs a running "segment everything" has found
    duplicates: list = field(default_factory=list)  # groups of ids (best first) from find_duplicates
    lock: threading.RLock = field(default_factory=threading.RLock)
    exports: list = field(default_factory=list)  # folders written by export, removed on free
    documents: OrderedDict = field(default_factory=OrderedDict)  # image content key -> its document
    # what the canvas layer under the prompt was last rendered from, and the result
    layer_key: tuple | None = None
    layer: np.ndarray | None = None
    sent_canvas_key: tuple | None = None
    sent_table_key: tuple | None = None
    note: str = ""  # what opening the image had to say (animated, masks dropped), kept for encode
    project: OpenProject | None = None
    canvas: object = None  # annotator.app.canvas_link.BrowserCanvas: what the browser canvas holds


@dataclass
class View:
    """What the UI shows after an action. ``canvas``/``table`` are None when unchanged
    since this session's previous View (the UI then leaves the component alone)."""

    canvas: np.ndarray | None
    status: str
    message: str
    candidates: list[tuple[str, int]]
    candidate: int | None
    table: list[list] | None
    mode: str = "positive"
    progress: list[list] | None = None  # the project's image list; None: unchanged or no project
    # for the browser canvas (Workbench.browser_canvas): makes the frame of what changed; called
    # only for a View that goes to the browser, so no frame is numbered and then lost
    frame: object = None


@dataclass
class AmgStep:
    """One step of "segment everything": the View, and progress in point batches."""

    view: View
    done: int
    total: int
    eta_s: float | None
    final: bool


@dataclass
class Export:
    files: list[Path]
    coco: Path
    view: View


class Workbench:
    """Owns the segmenter, its BackendInfo and the sessions; its methods are the app."""

    def __init__(self, segmenter, info: BackendInfo, *, limits: Limits | None = None,
                 max_display_side: int = cv.DISPLAY_MAX_SIDE,
                 projects: ProjectLibrary | None = None, folders: FolderPolicy | None = None,
                 prefetch: bool = True):
        self.segmenter = segmenter
        self.info = info
        self.limits = limits or Limits()
        self.sessions: SessionStore[Session] = SessionStore(
            Session, max_sessions=self.limits.max_sessions, idle_seconds=self.limits.idle_seconds,
            on_evict=_release_session)
        self.max_display_side = max_display_side
        # True: the app's canvas draws in the browser (View.frame); False: View.canvas images
        self.browser_canvas = False
        self.renderer = render.Renderer()
        # every export folder lives under one root, removed with the workbench
        self.export_root = Path(tempfile.mkdtemp(prefix="annotator-exports-"))
        weakref.finalize(self, shutil.rmtree, str(self.export_root), True)
        # idle sessions are freed by a sweep; the thread holds the store weakly and stops
        # when the workbench goes
        stop = threading.Event()
        interval = min(60.0, max(0.1, self.limits.idle_seconds / 4))
        threading.Thread(target=_sweep_sessions, args=(weakref.ref(self.sessions), stop, interval),
                         name="annotator-session-sweep", daemon=True).start()
        weakref.finalize(self, stop.set)
        # one model call at a time, whoever makes it: every encoder and decoder call holds
        # this lock (clicks, uploads, segment everything call by call, and the background
        # prefetch, which yields to users)
        self.model_lock = ModelLock()
        self.projects = projects if projects is not None else ProjectLibrary()
        self.folders = folders if folders is not None else FolderPolicy()
        # (partial, not a lambda over self: the finalizer below must not keep self alive)
        self.prefetcher = Prefetcher(functools.partial(_embed, segmenter), self.model_lock) \
            if prefetch else None
        weakref.finalize(self, self.projects.close)
        if self.prefetcher is not None:
            weakref.finalize(self, self.prefetcher.close)

    # -- sessions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, sid: str):
        s = self.sessions.get(sid)
        with s.lock:
            yield s

    def session(self, sid: str) -> Session:
        """The session's state (created on first use); for tests and the UI's own reads."""
        return self.sessions.get(sid)

    def free(self, sid: str) -> None:
        """Forget a session (the browser tab closed)."""
        s = self.sessions.peek(sid)
        if s is not None:
            _release_session(sid, s)
        self.sessions.free(sid)

    def keep_alive(self, sid: str) -> bool:
        """The browser tab is still open: its session is not idle (False if already freed)."""
        return self.sessions.touch(sid)

    def session_bytes(self, sid: str) -> int:
        """Memory the session holds (image, embedding, prompt, canvas, masks of every image)."""
        with self._session(sid) as s:
            return _session_bytes(s)

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
        notes: list[str] = []
        limit = self.limits.max_pixels
        try:
            if isinstance(source, np.ndarray):
                image = as_rgb_array(source)
                if image.shape[0] * image.shape[1] > limit:
                    raise ImageTooLarge(f"the image is {image.shape[1]}x{image.shape[0]} pixels; the limit "
                                        f"is {limit / 1e6:g} megapixels")
            else:
                image = load_image(source, max_pixels=limit, notes=notes)
        except ImageTooLarge as e:
            raise WorkbenchError(f"{e}. Downscale it, or start the server with a larger --max-pixels "
                                 "(ANNOTATOR_MAX_PIXELS). Nothing was changed.") from None
        except ImageError as e:
            raise WorkbenchError(f"{e}. Open a PNG, JPEG, WebP, TIFF, BMP or GIF image instead. "
                                 "Nothing was changed.") from None
        if name is None:
            name = Path(source).name if isinstance(source, (str, Path)) else "image"
        name = safe_name(name)
        scale = cv.display_scale(image.shape[:2], self.max_display_side)
        key = image_key(image)
        with self._session(sid) as s:
            # checked before anything changes: what this image needs can never be dropped
            reopened = s.documents.get(key)
            need = _image_bytes(image.shape[:2], scale) + (reopened.nbytes() if reopened is not None else 0)
            if need > self.limits.session_bytes:
                raise WorkbenchError(
                    f"{name} ({image.shape[1]}x{image.shape[0]}) needs about {human_bytes(need)} of memory "
                    f"to annotate; a session may use {human_bytes(self.limits.session_bytes)} "
                    "(--max-session-mb, ANNOTATOR_MAX_SESSION_MB). Open a smaller image; nothing was changed.")
            s.cancel.set()  # a "segment everything" still running on the previous image stops
            s.image, s.name = image, name
            s.scale = scale
            s.embedding = None
            doc = s.documents.pop(key, None)
            again = doc is not None and len(doc) > 0
            s.doc = doc if doc is not None else AnnotationDocument(*image.shape[:2], image_id=name)
            s.documents[key] = s.doc
            # forget the oldest images without masks beyond MAX_DOCUMENTS; masks are dropped
            # only by the memory limit, and then the message says so (_make_room)
            for k in [k for k, d in s.documents.items() if len(d) == 0 and d is not s.doc]:
                if len(s.documents) <= MAX_DOCUMENTS:
                    break
                del s.documents[k]
            s.prompt, s.cursor, s.last_pick, s.preview, s.duplicates = Prompt(), None, None, [], []
            s.layer, s.layer_key = None, None
            s.sent_canvas_key = s.sent_table_key = None
            dropped = self._make_room(s, 0, "open this image")
            h, w = image.shape[:2]
            shown = "" if s.scale == 1 else f", shown at {s.scale:.0%}"
            n = len(s.doc)
            back = f" Its {_plural(n, 'mask')} from before {'is' if n == 1 else 'are'} back." if again else ""
            s.note = ("".join(f" Note: {t}." for t in notes) + dropped).strip()
            note = f" {s.note}" if s.note else ""
            return self._view(s, f"{name}: {w}x{h}{shown}.{back}{note} Computing the image embedding…")

    def encode(self, sid: str) -> View:
        with self._session(sid) as s:
            self._need_image(s)
            cached = self.segmenter.is_cached(s.image)
            if self.prefetcher is not None and not cached:
                self.prefetcher.cancel()  # the user's own image goes first
            with self.model_lock:
                s.embedding = _embed(self.segmenter, s.image)
            what = "from the cache" if cached else "computed"
            note, s.note = (s.note + " " if s.note else ""), ""
            view = self._view(s, f"{note}Embedding {what}. Click on the image to segment an object.")
        self._prefetch_after(sid)  # in a project: the next image, while this one is worked on
        return view

    # -- prompting -----------------------------------------------------------------------
    def set_mode(self, sid: str, mode: str) -> View:
        if mode not in MODES:
            raise WorkbenchError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        with self._session(sid) as s:
            self._switch_mode(s, mode)
            hints = {"positive": "Click the object to add a positive point.",
                     "negative": "Click where the mask should not reach.",
                     "box": "Click two opposite corners of a box.",
                     "select": "Click a mask to (de)select it; click again at the same spot "
                               "for the mask beneath."}
            return self._view(s, hints[mode])

    @staticmethod
    def _switch_mode(s: Session, mode: str) -> None:
        # Idempotent: the UI sends the mode with every click and separately when it changes,
        # and the two may arrive in either order; only a real change drops a half-drawn box.
        if mode != s.mode:
            s.mode = mode
            s.prompt.corner = None

    def click_display(self, sid: str, x: float, y: float, mode: str | None = None) -> View:
        """A click on the canvas, in canvas pixels (what the browser reports)."""
        s = self.sessions.get(sid)
        if s.image is None:
            raise WorkbenchError("Upload an image first (or pick an example).")
        ix, iy = cv.to_image_xy(x, y, s.scale, s.image.shape[:2])
        return self.click(sid, ix, iy, mode)

    def click(self, sid: str, x: float, y: float, mode: str | None = None) -> View:
        """A click at (x, y) in original image pixels, in ``mode`` (default: the session's)."""
        with self._session(sid) as s:
            self._need_image(s)
            if mode is not None:
                if mode not in MODES:
                    raise WorkbenchError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
                self._switch_mode(s, mode)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise WorkbenchError("click coordinates must be numbers")
            if s.mode == "select":
                return self._view(s, self._pick(s, x, y))
            h, w = s.image.shape[:2]
            if not (0 <= x <= w and 0 <= y <= h):
                raise WorkbenchError(f"The point ({x:g}, {y:g}) is outside the image ({w}x{h} pixels); "
                                     "click on the image.")
            self._need_embedding(s)
            before = _copy_prompt(s.prompt)
            try:
                with self.model_lock:
                    msg = prompt_click(s.prompt, self.segmenter, s.embedding, s.mode, x, y)
            except ValueError as e:
                s.prompt = before  # a refused click leaves the prompt as it was
                raise WorkbenchError(str(e)) from None
            return self._view(s, msg + self._score_text(s.prompt))

    def choose_candidate(self, sid: str, position: int) -> View:
        with self._session(sid) as s:
            try:
                s.prompt.choose(int(position))
            except ValueError as e:
                raise WorkbenchError(str(e)) from None
            return self._view(s, f"candidate {s.prompt.choice + 1}" + self._score_text(s.prompt))

    def clear_prompt(self, sid: str) -> View:
        with self._session(sid) as s:
            s.prompt = Prompt()
            return self._view(s, "Prompt cleared.")

    def accept(self, sid: str, label: str | None = None) -> View:
        """Add the prompt's current mask to the document (accepted, with ``label``)."""
        with self._session(sid) as s:
            self._need_image(s)
            mask = s.prompt.mask
            if mask is None:
                raise WorkbenchError("Nothing to accept: click on the object first.")
            if not mask.any():
                raise WorkbenchError("The mask is empty; add a point or choose another candidate.")
            self._need_room_for_masks(s, 1, "accept this mask")
            rle = to_rle(mask, s.doc.size)
            dropped = self._make_room(s, len(rle["counts"]), "accept this mask")
            label = (label or "").strip() or None
            ann_id = s.doc.add(rle, source="prompt", label=label, prompts=s.prompt.record(),
                               predicted_iou=s.prompt.score, review="accepted")
            s.prompt = Prompt()
            return self._view(s, f"Added mask {ann_id}" + (f" ({label})" if label else "") + f".{dropped}")

    # -- selecting -----------------------------------------------------------------------
    def _pick(self, s: Session, x: float, y: float) -> str:
        shown = {a.id for a in self._shown(s)}
        hits = [i for i in s.doc.hit_test(x, y, visible_only=True) if i in shown]
        if not hits:
            s.last_pick = None
            return "No mask here."
        same = s.last_pick is not None and math.hypot(x - s.last_pick[0], y - s.last_pick[1]) < SAME_PIXEL
        current = s.last_pick[2] if same else None
        pick = next_in_stack(hits, current)
        sel = set(s.doc.selection)
        if current is not None and pick != current:
            new = (sel - {current}) | {pick}  # cycling: the next mask down replaces the last pick
        else:
            new = sel ^ {pick}
        s.doc.select(new, "replace")
        s.last_pick = (x, y, pick)
        what = "selected" if pick in new else "deselected"
        depth = ""
        if len(hits) > 1:
            depth = f" ({hits.index(pick) + 1} of {len(hits)} here; click again for the next)"
        return f"Mask {pick} {what}{depth}."

    def select_mask(self, sid: str, ann_id: int, mode: str = "toggle") -> View:
        """Select a mask by id (a click on its table row toggles it)."""
        with self._session(sid) as s:
            self._need_image(s)
            try:
                s.doc.select([int(ann_id)], mode)
            except (KeyError, ValueError) as e:
                raise WorkbenchError(str(e).strip("'\"")) from None
            state = "selected" if int(ann_id) in s.doc.selection else "deselected"
            return self._view(s, f"Mask {int(ann_id)} {state}.")

    def clear_selection(self, sid: str) -> View:
        with self._session(sid) as s:
            self._need_image(s)
            s.doc.clear_selection()
            return self._view(s, "Selection cleared.")

    def select_shown(self, sid: str) -> View:
        with self._session(sid) as s:
            self._need_image(s)
            ids = [a.id for a in self._shown(s)]
            s.doc.select(ids, "replace")
            return self._view(s, f"{len(ids)} masks selected.")

    # -- editing -------------------------------------------------------------------------
    def merge(self, sid: str) -> View:
        with self._session(sid) as s:
            ids = self._need_selection(s, 2, "merge")
            new = s.doc.merge(ids)
            return self._view(s, f"Merged {_ids_text(ids)} into mask {new}.")

    def subtract(self, sid: str) -> View:
        """Cut the other selected masks out of the largest selected one."""
        with self._session(sid) as s:
            ids = self._need_selection(s, 2, "subtract")
            target = max(ids, key=lambda i: (s.doc[i].area, -i))
            tools = [i for i in ids if i != target]
            try:
                s.doc.subtract(target, tools)
            except ValueError as e:
                raise WorkbenchError(str(e)) from None
            s.doc.select([target], "replace")
            return self._view(s, f"Cut {_ids_text(tools)} out of mask {target}.")

    def delete(self, sid: str) -> View:
        with self._session(sid) as s:
            ids = self._need_selection(s, 1, "delete")
            s.doc.delete(ids)
            if s.cursor in ids:
                s.cursor = None
            return self._view(s, f"Deleted {_ids_text(ids)}. Undo brings them back.")

    def toggle_visibility(self, sid: str) -> View:
        with self._session(sid) as s:
            ids = self._need_selection(s, 1, "hide or show")
            s.doc.toggle_visibility(ids)
            hidden = [i for i in ids if not s.doc[i].visible]
            return self._view(s, f"Hid {_ids_text(hidden)}." if hidden else f"Showing {_ids_text(ids)}.")

    def relabel(self, sid: str, label: str | None) -> View:
        with self._session(sid) as s:
            ids = self._targets(s, "label")
            label = (label or "").strip() or None
            s.doc.relabel(ids, label)
            return self._view(s, f"Labelled {_ids_text(ids)} {label!r}." if label else
                              f"Removed the label of {_ids_text(ids)}.")

    def undo(self, sid: str) -> View:
        """Undo the last prompt point while prompting, otherwise the last document edit."""
        with self._session(sid) as s:
            self._need_image(s)
            if not s.prompt.empty or s.prompt.corner is not None:
                with self.model_lock:
                    undo_last(s.prompt, self.segmenter, s.embedding)
                return self._view(s, "Removed the last prompt point.")
            if self._in_project(s):
                return self._project_step(s, forward=False)
            action = s.doc.undo()
            return self._view(s, f"Undid: {action}." if action else "Nothing to undo.")

    def redo(self, sid: str) -> View:
        with self._session(sid) as s:
            self._need_image(s)
            if self._in_project(s):
                return self._project_step(s, forward=True)
            action = s.doc.redo()
            return self._view(s, f"Redid: {action}." if action else "Nothing to redo.")

    # -- the browser canvas ------------------------------------------------------------
    def remove_point(self, sid: str, index: int) -> View:
        """Remove prompt point ``index`` (0-based, in the order they were added)."""
        with self._session(sid) as s:
            self._need_image(s)
            self._need_embedding(s)
            try:
                with self.model_lock:
                    remove_point(s.prompt, self.segmenter, s.embedding, int(index))
            except ValueError as e:
                raise WorkbenchError(str(e)) from None
            return self._view(s, f"Removed point {int(index) + 1}." + self._score_text(s.prompt))

    def drag_box(self, sid: str, x0: float, y0: float, x1: float, y1: float) -> View:
        """A box prompt drawn in one drag (the same as two clicks in box mode)."""
        with self._session(sid) as s:
            self._need_image(s)
            s.prompt.corner = None
            self.click(sid, x0, y0, "box")
            return self.click(sid, x1, y1, "box")

    def paint(self, sid: str, ann_id: int, strokes: list) -> View:
        """Brush / eraser strokes on one mask, one undoable edit (see AnnotationDocument.paint)."""
        with self._session(sid) as s:
            self._need_image(s)
            try:
                s.doc.paint(int(ann_id), strokes)
            except (KeyError, ValueError) as e:
                raise WorkbenchError(str(e).strip("'\"")) from None
            return self._view(s, f"Painted mask {int(ann_id)}. Undo restores it.")

    def canvas_actions(self, sid: str, message, label: str | None = None) -> View:
        """The browser canvas's actions (points, boxes, strokes, ...) as Workbench calls."""
        return canvas_link.apply(self, sid, message, label)

    def canvas_image(self, key: str) -> np.ndarray | None:
        """The image a browser canvas shows under ``key`` (for its full-resolution crops)."""
        return canvas_link.image_for_key((self.sessions.peek(k) for k in self.sessions.keys()), key)

    def classes(self, sid: str):
        """The session's class list (the open project's categories)."""
        return canvas_link.classes_of(self.session(sid))

    # -- review (triage) -----------------------------------------------------------------
    def review(self, sid: str, state: str) -> View:
        """Mark the mask under review (or, with none, the selection) accepted / rejected /
        pending, then move on to the next pending mask in the table's order."""
        if state not in ("accepted", "rejected", "pending"):
            raise WorkbenchError(f"review state must be accepted, rejected or pending; got {state!r}")
        with self._session(sid) as s:
            self._need_image(s)
            if s.cursor is not None and s.cursor in s.doc:
                ids = [s.cursor]
            elif s.doc.selection:
                ids = s.doc.selected()
            else:
                raise WorkbenchError("Nothing to review: press Next (J) to start, or select masks.")
            s.doc.set_review(ids, state)
            if s.cursor is not None:
                s.cursor = self._next_pending(s, s.cursor)
            after = f" Next: mask {s.cursor}." if s.cursor is not None else " No pending masks left."
            return self._view(s, f"{_ids_text(ids).capitalize()} {state}.{after}")

    def step(self, sid: str, delta: int = 1) -> View:
        """Move the review cursor to the next (``delta`` > 0) or previous mask shown."""
        with self._session(sid) as s:
            self._need_image(s)
            order = [a.id for a in self.table_order(s)]
            if not order:
                s.cursor = None
                return self._view(s, "No masks to review.")
            if s.cursor in order:
                k = (order.index(s.cursor) + (1 if delta > 0 else -1)) % len(order)
            else:
                k = 0 if delta > 0 else len(order) - 1
            s.cursor = order[k]
            a = s.doc[s.cursor]
            return self._view(s, f"Reviewing mask {a.id} ({k + 1} of {len(order)}, {a.review}): "
                                 "Y accept, X reject, J/K next/previous.")

    def _next_pending(self, s: Session, after: int) -> int | None:
        order = [a.id for a in self.table_order(s)]
        k = order.index(after) if after in order else -1
        for i in order[k + 1:] + order[:k + 1]:
            if s.doc[i].review == "pending":
                return i
        return None

    # -- segment everything ------------------------------------------------------------------
    def segment_everything(self, sid: str, **params) -> Iterator[AmgStep]:
        """Run SAM's automatic mask generator on the session's image, yielding a step per
        point batch (its masks drawn as a provisional preview) and a final step once the
        deduplicated masks are in the document (one undoable edit, review "pending").
        ``cancel(sid)`` stops it after the current batch; the masks found so far are kept.
        Parameters are SAM's (``AMG_DEFAULTS``)."""
        s = self.sessions.get(sid)
        with s.lock:
            self._need_image(s)
            self._need_embedding(s)
            if self.info.backend != "sam":
                raise WorkbenchError("Segment everything needs SAM; the classical backend (GrabCut) "
                                     "cannot do it. Start the app with SAM weights.")
            unknown = set(params) - set(AMG_DEFAULTS)
            if unknown:
                raise WorkbenchError(f"unknown segment-everything parameters: {', '.join(sorted(unknown))}")
            p = dict(AMG_DEFAULTS)
            p.update({k: v for k, v in params.items() if v is not None})
            for k in ("points_per_side", "points_per_batch", "crop_n_layers", "min_mask_region_area"):
                p[k] = int(p[k])
            for k in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
                p[k] = float(p[k])
            try:
                MaskGenerator(self.segmenter, output_mode="coco_rle", **p)  # checks the values
            except (ValueError, TypeError) as e:
                raise WorkbenchError(str(e)) from None
            s.cancel = threading.Event()
            cancel, image, doc = s.cancel, s.image, s.doc
            s.preview = []
            s.amg_params = p
        t0 = time.perf_counter()
        records, note = None, ""
        try:
            # the generator takes the model lock for its model calls only, so other sessions'
            # clicks get in between, also while it post-processes a batch
            for update in _generate(self.segmenter, image, p, cancel, self.model_lock):
                if update.final:
                    records = update.records
                    break
                with s.lock:
                    if s.doc is not doc:  # another image was opened meanwhile
                        return
                    s.preview.extend(r["segmentation"] for r in update.records)
                    pr = update.progress
                    eta = f", about {pr.eta_s:.0f} s left" if pr.eta_s is not None else ""
                    view = self._view(s, f"Segment everything: batch {pr.done} of {pr.total}, "
                                         f"{len(s.preview)} candidate masks so far{eta}.")
                yield AmgStep(view, pr.done, pr.total, pr.eta_s, False)
        except Cancelled as e:
            records = e.records
            note = f" Cancelled after {e.done} of {e.total} batches; kept what was found."
        finally:
            with s.lock:
                s.preview = []
        # Never yield while holding the session lock: Gradio resumes a generator on another
        # worker thread (an RLock cannot be released there), and a generator the client
        # abandons would keep the session locked for good.
        with s.lock:
            if s.doc is not doc:
                return
            records, capped = self._fit_mask_cap(s, records or [])
            extra = sum(len(r["segmentation"]["counts"]) for r in records)
            try:
                dropped = self._make_room(s, extra, "add these masks")
            except WorkbenchError as e:
                last = AmgStep(self._view(s, f"Segment everything found {_plural(len(records), 'mask')} "
                                             f"but kept none: {e}"), 1, 1, 0.0, True)
            else:
                action = f"segment everything: {_plural(len(records), 'mask')}"
                ids = doc.add_many(records, source="auto", action=action) if records else []
                secs = time.perf_counter() - t0
                msg = (f"Segment everything found {_plural(len(ids), 'mask')} in {secs:.1f} s.{note}{capped}"
                       f"{dropped} Filter and sort them in the Masks tab; review with J (next), Y (accept), "
                       "X (reject).")
                last = AmgStep(self._view(s, msg), 1, 1, 0.0, True)
        yield last

    def cancel(self, sid: str) -> None:
        """Ask a running "segment everything" of this session to stop after its current batch."""
        s = self.sessions.peek(sid)
        if s is not None:
            s.cancel.set()

    # -- duplicates ------------------------------------------------------------------------
    def find_duplicates(self, sid: str, iou_thresh: float = 0.8) -> View:
        """Group the shown masks whose IoU exceeds ``iou_thresh`` (greedy, best score leads:
        ``redundancy.group_by_iou``); groups of two or more are listed for resolving."""
        if not 0.0 < float(iou_thresh) < 1.0:
            raise WorkbenchError("the IoU threshold must be between 0 and 1")
        with self._session(sid) as s:
            self._need_image(s)
            anns = [a for a in self._shown(s) if a.review != "rejected"]
            groups = []
            if len(anns) > 1:
                leader = redundancy.group_by_iou([a.rle for a in anns], [_quality(a) for a in anns],
                                                 float(iou_thresh))
                for k in np.unique(leader):
                    members = [anns[i].id for i in np.flatnonzero(leader == k)]
                    if len(members) > 1:
                        members.remove(anns[k].id)
                        groups.append([anns[k].id, *members])
            groups.sort(key=lambda g: -len(g))
            s.duplicates = groups
            if not groups:
                return self._view(s, "No duplicates: no two shown masks overlap with IoU > "
                                     f"{iou_thresh:.2f}.")
            extra = sum(len(g) - 1 for g in groups)
            return self._view(s, f"{_plural(len(groups), 'group')} of near-duplicates "
                                 f"(IoU > {iou_thresh:.2f}), "
                                 f"{extra} masks more than needed. Click a group to see it; keep the best "
                                 "of each or merge each into one.")

    def duplicate_rows(self, sid: str) -> list[list]:
        """The duplicate groups for the inspector's table: group, best mask, others, size."""
        with self._session(sid) as s:
            return [[k + 1, g[0], ", ".join(map(str, g[1:])), len(g)] for k, g in enumerate(self._groups(s))]

    def select_duplicates(self, sid: str, group: int) -> View:
        """Select the masks of one group (1-based, as listed) to look at them."""
        with self._session(sid) as s:
            groups = self._groups(s)
            if not 1 <= int(group) <= len(groups):
                raise WorkbenchError(f"there are {len(groups)} duplicate groups; {group} is not one")
            ids = groups[int(group) - 1]
            s.doc.select(ids, "replace")
            return self._view(s, f"Group {int(group)}: best mask {ids[0]}, duplicates {_ids_text(ids[1:])}.")

    def resolve_duplicates(self, sid: str, how: str = "keep_best", group: int | None = None) -> View:
        """``keep_best``: delete all but each group's best mask (one undoable step);
        ``merge``: replace each group by the union of its masks (one step per group).
        ``group`` (1-based) limits it to one group."""
        if how not in ("keep_best", "merge"):
            raise WorkbenchError("resolve duplicates by 'keep_best' or 'merge'")
        with self._session(sid) as s:
            groups = self._groups(s)
            if group is not None:
                if not 1 <= int(group) <= len(groups):
                    raise WorkbenchError(f"there are {len(groups)} duplicate groups; {group} is not one")
                groups = [groups[int(group) - 1]]
            if not groups:
                raise WorkbenchError("No duplicate groups: press Find duplicates first.")
            if how == "keep_best":
                gone = [i for g in groups for i in g[1:]]
                s.doc.delete(gone)
                msg = (f"Kept the best of {_plural(len(groups), 'group')}; "
                       f"deleted {_plural(len(gone), 'mask')}.")
            else:
                new = [s.doc.merge(g) for g in groups]
                msg = f"Merged {_plural(len(groups), 'group')} into {_ids_text(new)}."
            if s.cursor is not None and s.cursor not in s.doc:
                s.cursor = None
            s.duplicates = []
            return self._view(s, msg)

    @staticmethod
    def _groups(s: Session) -> list[list[int]]:
        """The last duplicate search, less the masks deleted since (groups left with one
        mask are gone; if a group's best mask went, the next one leads)."""
        if s.doc is None:
            return []
        s.duplicates = [g for g in ([i for i in g if i in s.doc] for g in s.duplicates) if len(g) > 1]
        return s.duplicates

    # -- export and import ----------------------------------------------------------------
    def export(self, sid: str, segmentation: str = "rle", include_pending: bool = True,
               figures: bool = True, out_dir: str | Path | None = None) -> "Export":
        """Write the annotations: COCO JSON (RLE or polygons), a 16-bit instance-id PNG, a
        class-index PNG, the overlay PNG and, with ``figures``, the review figures. Rejected
        masks are left out; pending ones too unless ``include_pending``. Each export goes
        to a fresh folder (a download never gets an older file of the same name)."""
        if segmentation not in ("rle", "polygon"):
            raise WorkbenchError("segmentation must be 'rle' or 'polygon'")
        with self._session(sid) as s:
            self._need_image(s)
            anns = [a for a in s.doc.annotations if a.review == "accepted" or
                    (include_pending and a.review == "pending")]
            if not anns:
                raise WorkbenchError("Nothing to export: accept a mask first" +
                                     ("." if include_pending else ", or include pending masks."))
            keep = {a.id for a in anns}
            doc = AnnotationDocument.from_records(
                *s.doc.size, [r for r in s.doc.records() if r["id"] in keep], image_id=s.name)
            if out_dir is None:
                folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.export_root))
                s.exports.append(folder)
                while len(s.exports) > KEEP_EXPORTS:  # only recent downloads stay available
                    shutil.rmtree(s.exports.pop(0), ignore_errors=True)
            else:
                folder = Path(out_dir)
                folder.mkdir(parents=True, exist_ok=True)
            stem = safe_stem(s.name)
            h, w = s.doc.size
            dataset = coco.from_documents(
                [(doc, {"id": 1, "file_name": s.name, "height": h, "width": w})],
                model=self.info.model or self.info.backend, parameters=s.amg_params or None)
            files = [coco.save(dataset, folder / f"{stem}_coco.json", segmentation)]
            files.append(labels.write_instance_png(folder / f"{stem}_instances.png", doc))
            classes = ["background"] + sorted({a.label or coco.DEFAULT_CATEGORY for a in anns})
            relabelled = doc
            if any(a.label is None for a in anns):
                relabelled = AnnotationDocument.from_records(*doc.size, [
                    {**r, "label": r["label"] or coco.DEFAULT_CATEGORY} for r in doc.records()])
            files.append(labels.write_semantic_png(folder / f"{stem}_classes.png", relabelled, classes))
            (folder / f"{stem}_classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
            files.append(folder / f"{stem}_classes.txt")
            over = render.overlay(s.image, [a.rle for a in anns], alpha=s.view.alpha,
                                  colors=render.palette(a.id for a in anns), outlines=True)
            files.append(_write_rgb_png(folder / f"{stem}_overlay.png", over))
            if figures:
                rles = [a.rle for a in anns]
                scores = {k: [getattr(a, k) if getattr(a, k) is not None else float("nan") for a in anns]
                          for k in ("predicted_iou", "stability_score")
                          if any(getattr(a, k) is not None for a in anns)}
                files.append(figs.mask_grid(s.image, rles, folder / f"{stem}_masks.png",
                                            scores=scores or None))
                files.append(figs.size_views(s.image, rles, folder / f"{stem}_sizes.png"))
                if "predicted_iou" in scores:
                    files.append(figs.quality_views(s.image, rles, scores["predicted_iou"],
                                                    folder / f"{stem}_quality.png"))
                if len(rles) > 1:
                    files.append(figs.containment_heatmap(rles, folder / f"{stem}_containment.png",
                                                          labels=[str(a.id) for a in anns]))
            n_pending = sum(a.review == "pending" for a in anns)
            what = f"{len(anns)} masks ({len(anns) - n_pending} accepted, {n_pending} pending)"
            return Export(files=[Path(f) for f in files], coco=Path(files[0]),
                          view=self._view(s, f"Exported {what} as COCO {segmentation.upper()} "
                                             f"and {len(files) - 1} more files."))

    def import_annotations(self, sid: str, path: str | Path) -> View:
        """Add the masks of a COCO file (or SAM amg.py output) for the current image, for review.

        The file's image is matched by file name, then (for a file of one image) by size."""
        with self._session(sid) as s:
            self._need_image(s)
            label = safe_name(Path(path).name, "the file")
            try:
                dataset = coco.load(path, max_bytes=self.limits.json_bytes, name=label)
                image = self._matching_image(s, dataset, label)
                imported = coco.to_document(dataset, image["id"])
            except (coco.CocoError, ValueError, KeyError, TypeError) as e:
                if isinstance(e, WorkbenchError):
                    raise
                why = str(e).strip("'")
                why = why if why.startswith(f"{label}: ") else f"{label}: {why}"
                raise WorkbenchError(f"Could not import {why}. Nothing was imported; the masks you have "
                                     "are unchanged.") from None
            fields = ("label", "predicted_iou", "stability_score", "point_coords", "crop_box",
                      "prompts", "review", "visible", "meta")
            items = [{"segmentation": a.rle, **{f: getattr(a, f) for f in fields}} for a in imported]
            if not items:
                raise WorkbenchError(f"{label} has no annotations for {image.get('file_name')}.")
            self._need_room_for_masks(s, len(items), f"import the {len(items)} masks of {label}")
            dropped = self._make_room(s, sum(len(i["segmentation"]["counts"]) for i in items),
                                      f"import the masks of {label}")
            try:
                ids = s.doc.add_many(items, source="import", action=f"import {len(items)} masks")
            except ValueError as e:  # checked in full before anything is added
                raise WorkbenchError(f"Could not import {label}: {e}. Nothing was imported.") from None
            return self._view(s, f"Imported {_plural(len(ids), 'mask')} from {label} "
                                 f"(ids {ids[0]}–{ids[-1]}).{dropped}")

    def _matching_image(self, s: Session, dataset, file_label: str) -> dict:
        h, w = s.image.shape[:2]
        names = {Path(s.name).name, Path(s.name).stem}
        files = [Path(str(i.get("file_name", ""))) for i in dataset.images]
        by_name = [i for i, f in zip(dataset.images, files) if f.name in names or f.stem in names]
        candidates = by_name or (dataset.images if len(dataset.images) == 1 else [])
        if not candidates:
            listed = ", ".join(str(i.get("file_name")) for i in dataset.images[:5])
            raise WorkbenchError(f"{file_label} has no image named {s.name} (it has: {listed}"
                                 f"{', …' if len(dataset.images) > 5 else ''}). Open the image the file "
                                 "was made for, or import the file made for this one.")
        image = candidates[0]
        if (image.get("height"), image.get("width")) != (h, w):
            raise WorkbenchError(f"{file_label}: {image.get('file_name')} is {image.get('width')}x"
                                 f"{image.get('height')} but the open image is {w}x{h}; the masks would not "
                                 "line up. Open the image the file was made for.")
        return image

    # -- projects --------------------------------------------------------------------------
    # A session may open a project (``annotator.projects.store``): a list of images whose documents
    # live in the project file. ``_view`` saves the shown image's document whenever it
    # changed, before the View reports anything, so every edit the UI shows is on disk;
    # undo/redo then walk the project's persistent history instead of the document's.
    def project_names(self) -> list[str]:
        return self.projects.names()

    def open_project(self, sid: str, name: str, *, image_id: int | None = None,
                     create: bool = True, encode: bool = True) -> View:
        """Open (or create) the project ``name`` and show ``image_id``, else the image it was
        left at, else its first image. ``encode=False`` leaves the embedding to ``encode``."""
        try:
            store = self.projects.open(name, create=create)
        except (ProjectNameError, ProjectError) as e:
            raise WorkbenchError(str(e)) from None
        with self._session(sid) as s:
            s.cancel.set()
            s.project = OpenProject(name=self.projects.path(name).stem, store=store)
            saved = store.get_state("view")
            if isinstance(saved, dict):
                with contextlib.suppress(TypeError, ValueError):
                    s.view = ViewOptions(**{k: type(getattr(ViewOptions(), k))(v) for k, v in saved.items()
                                            if k in ViewOptions.__dataclass_fields__})
            s.project.saved_view = astuple(s.view)
            ids = [i.id for i in store.images()]
            target = next((i for i in (image_id, store.get_state("current_image")) if i in ids),
                          ids[0] if ids else None)
            if target is None:
                self._clear_image(s)
                return self._view(s, f"Project {s.project.name} is empty: add images (upload several "
                                     "at once, or a server folder).")
        try:
            return self.go_to_image(sid, target, encode=encode)
        except WorkbenchError as e:  # e.g. a server file that moved: the project stays open
            with self._session(sid) as s:
                self._clear_image(s)
                s.project.image_id = target  # (no document: nothing is saved) next/previous go on from here
                return self._view(s, f"Opened project {s.project.name}, but: {e} Pick another image "
                                     "in the list.")

    def close_project(self, sid: str) -> View:
        """Back to single images (the project's work is all saved already)."""
        with self._session(sid) as s:
            if s.project is None:
                raise WorkbenchError("No project is open.")
            name = s.project.name
            s.cancel.set()
            s.project = None
            self._clear_image(s)
            return self._view(s, f"Closed project {name}; everything in it was saved.")

    def project_of(self, sid: str) -> OpenProject | None:
        s = self.sessions.peek(sid)
        return None if s is None else s.project

    def resume_state(self, sid: str) -> dict | None:
        """What the browser keeps to reopen this session's place after a reload/restart."""
        p = self.project_of(sid)
        return None if p is None else {"project": p.name, "image": p.image_id}

    def resume(self, sid: str, state, *, encode: bool = True) -> View:
        """Reopen where a reloaded page left off (``state`` from ``resume_state``, kept in
        the browser); a page with nothing to resume, or a project gone, gets a plain View."""
        s = self.sessions.get(sid)
        if s.project is None and isinstance(state, dict) and state.get("project"):
            image = state.get("image")
            try:
                return self.open_project(sid, str(state["project"]), create=False, encode=encode,
                                         image_id=int(image) if isinstance(image, int) else None)
            except WorkbenchError as e:
                view = self.resend(sid)
                view.message = f"Could not reopen project {state['project']!r}: {e}"
                return view
        return self.resend(sid)

    def go_to_image(self, sid: str, image_id: int, *, encode: bool = True) -> View:
        """Show one image of the open project with its saved masks (and, with ``encode``,
        its embedding); then prefetch the next image's embedding in the background."""
        with self._session(sid) as s:
            p = self._need_project(s)
            info = None
            try:
                info = p.store.image(int(image_id))
                image = p.store.load_pixels(info.id, max_pixels=self.limits.max_pixels)
                doc = p.store.load_document(info.id)
            except KeyError:
                raise WorkbenchError(f"Project {p.name} has no image {image_id}.") from None
            except (ImageError, ProjectError, OSError) as e:
                what = info.name if info is not None else f"image {image_id}"
                raise WorkbenchError(f"Cannot open {what}: {str(e).rstrip('.')}.") from None
            s.cancel.set()
            self._show_image(s, image, info.name, doc)
            p.image_id, p.doc, p.saved_version, p.rev = info.id, doc, doc.version, info.rev
            p.rows_key = None
            with contextlib.suppress(ProjectError, sqlite3.Error):
                p.store.set_state("current_image", info.id)  # where a restarted server resumes
            n = len(doc)
            msg = f"{info.name} ({info.status}): {_plural(n, 'saved mask')}. " + ("" if encode else COMPUTING)
            if not encode:
                return self._view(s, msg)
        view = self.encode(sid)
        view.message = msg + view.message
        return view

    def step_image(self, sid: str, delta: int = 1, *, encode: bool = True) -> View:
        """The next (``delta`` > 0) or previous image of the project, wrapping around."""
        with self._session(sid) as s:
            p = self._need_project(s)
            ids = [i.id for i in p.store.images()]
            if not ids:
                raise WorkbenchError(f"Project {p.name} has no images yet: add some.")
            k = ids.index(p.image_id) + (1 if delta > 0 else -1) if p.image_id in ids else 0
            target = ids[k % len(ids)]
        return self.go_to_image(sid, target, encode=encode)

    def go_to_position(self, sid: str, position: int, *, encode: bool = True) -> View:
        """The image at ``position`` (0-based) in the progress list (a click on its row)."""
        with self._session(sid) as s:
            ids = [i.id for i in self._need_project(s).store.images()]
        if not 0 <= int(position) < len(ids):
            raise WorkbenchError(f"There is no image {int(position) + 1} in this project.")
        return self.go_to_image(sid, ids[int(position)], encode=encode)

    def add_uploads(self, sid: str, paths, names=None, *, encode: bool = True,
                    show: bool = False) -> View:
        """Add uploaded files to the project (their bytes are stored in it); shows the first
        one added when ``show`` or when no image is shown yet. Unreadable files are skipped
        and named."""
        paths = [Path(p) for p in (paths or [])]
        if not paths:
            raise WorkbenchError("Choose one or more image files to add.")
        sources, labels, unread = [], [], {}
        for k, path in enumerate(paths):
            try:
                sources.append(path.read_bytes())
                labels.append(Path(names[k]).name if names else path.name)
            except OSError as e:
                unread[path.name] = str(e)
        return self._add(sid, sources, labels, unread, encode, show)

    def add_folder(self, sid: str, folder: str, *, recursive: bool = False, encode: bool = True) -> View:
        """Add the images of a server folder (referenced in place), if the operator allowed it."""
        from annotator.amg.batch import find_images

        try:
            path = self.folders.check(folder)
            files = find_images([path], recursive=recursive)
        except (PermissionError, ImageError) as e:
            raise WorkbenchError(str(e)) from None
        return self._add(sid, [str(f) for f in files], None, {}, encode, False)

    def _add(self, sid: str, sources: list, names: list | None, unread: dict, encode: bool,
             show: bool) -> View:
        with self._session(sid) as s:
            p = self._need_project(s)
            errors: dict = {}
            try:
                infos = p.store.add_images(sources, names=names, errors=errors)
            except (ProjectError, sqlite3.Error) as e:
                raise WorkbenchError(f"Could not add images to {p.name}: {e}") from None
            for source, why in errors.items():
                unread[names[sources.index(source)] if names else Path(source).name] = why
            skipped = "".join(f" Skipped {k}: {v}." for k, v in unread.items())
            p.rows_key = None
            if not infos:
                raise WorkbenchError("No image was added." + skipped)
            msg = (f"Added {_plural(len(infos), 'image')} to project {p.name} "
                   f"({len(p.store.images())} in all).{skipped}")
            if not show and p.image_id is not None:
                return self._view(s, msg)
        view = self.go_to_image(sid, infos[0].id, encode=encode)
        view.message = msg + " " + view.message
        return view

    def set_done(self, sid: str, done: bool = True) -> View:
        """Mark the shown image done (or pending again)."""
        with self._session(sid) as s:
            p = self._need_project(s)
            if p.doc is None:
                raise WorkbenchError("Open an image of the project first.")
            status = "done" if done else "pending"
            try:
                p.store.set_status(p.image_id, status)
            except (ProjectError, sqlite3.Error) as e:
                raise WorkbenchError(f"Could not save the status: {e}") from None
            p.rows_key = None
            return self._view(s, f"{s.name} marked {status}.")

    def toggle_done(self, sid: str) -> View:
        p = self.project_of(sid)
        done = p is not None and p.image_id is not None and p.store.image(p.image_id).status == "done"
        return self.set_done(sid, not done)

    def export_project(self, sid: str, include_rejected: bool = False) -> Path:
        """The whole project as one COCO file (RLE masks), in a fresh folder for download."""
        with self._session(sid) as s:
            p = self._need_project(s)
            folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.export_root))
            s.exports.append(folder)
            while len(s.exports) > KEEP_EXPORTS:
                shutil.rmtree(s.exports.pop(0), ignore_errors=True)
            try:
                return p.store.export_coco(folder / f"{p.name}_coco.json", include_rejected=include_rejected,
                                           model=self.info.model or self.info.backend)
            except (ProjectError, sqlite3.Error, OSError, ValueError) as e:
                raise WorkbenchError(f"Could not export {p.name}: {e}") from None

    def progress_rows(self, sid: str) -> list[list]:
        """The project's images: marker (▶ shown), number, name, status, masks, accepted."""
        with self._session(sid) as s:
            return self._progress_rows(s)

    def _progress_rows(self, s: Session) -> list[list]:
        p = s.project
        if p is None:
            return []
        infos = p.store.images()
        done = sum(i.status == "done" for i in infos)
        where = next((f"image {k + 1}/{len(infos)} ({i.status})" for k, i in enumerate(infos)
                      if i.id == p.image_id), _plural(len(infos), "image"))
        p.summary = f"project {p.name}: {where}, {done} done"
        return [["▶" if i.id == p.image_id else "", k + 1, i.name, i.status, i.n_annotations, i.n_accepted]
                for k, i in enumerate(infos)]

    def _progress_if_changed(self, s: Session) -> list[list] | None:
        """The progress list when it may have changed (image shown, saved revision), else None."""
        p = s.project
        if p is None:
            return None
        key = (p.image_id, p.rev)
        if key == p.rows_key:
            return None
        rows = self._progress_rows(s)
        p.rows_key = key
        return rows

    @staticmethod
    def _project_status(s: Session) -> str:
        return s.project.summary or f"project {s.project.name}"

    def _in_project(self, s: Session) -> bool:
        p = s.project
        return p is not None and p.doc is not None and s.doc is p.doc

    def _need_project(self, s: Session) -> OpenProject:
        if s.project is None:
            raise WorkbenchError("Open or create a project first (Project tab).")
        return s.project

    def _save_project(self, s: Session) -> None:
        """Commit the shown image's document (and view options) if they changed since saved."""
        p = s.project
        if p is None:
            return
        view = astuple(s.view)
        if view != p.saved_view:
            with contextlib.suppress(ProjectError, sqlite3.Error):  # a preference, not work
                p.store.set_state("view", {k: getattr(s.view, k) for k in ViewOptions.__dataclass_fields__})
            p.saved_view = view
        if not self._in_project(s) or s.doc.version == p.saved_version:
            return
        try:
            p.rev = p.store.save(p.image_id, s.doc, base_rev=p.rev)
        except ConflictError as e:
            self._reload_document(s)
            raise WorkbenchError(f"{e}. Showing the saved masks now; please redo your last change.") from None
        except (ProjectError, sqlite3.Error, OSError, ValueError) as e:
            raise WorkbenchError(f"Could not save to project {p.name}: {e}. The last change is NOT "
                                 "saved; undo it or try again.") from None
        p.saved_version = s.doc.version

    def _reload_document(self, s: Session, records: list | None = None) -> None:
        """Replace the shown document by the project's records (after undo/redo or a conflict),
        keeping the selection that still exists."""
        p = s.project
        old = s.doc
        if records is None:
            records = p.store.records(p.image_id)
        doc = AnnotationDocument.from_records(*old.size, records, image_id=p.image_id)
        keep = [i for i in old.selection if i in doc]
        if keep:
            doc.select(keep, "replace")
        doc.version = old.version + 1  # a new version: the canvas and table caches are stale
        s.doc = p.doc = doc
        p.saved_version, p.rev = doc.version, p.store.undo_state(p.image_id).rev
        if s.cursor is not None and s.cursor not in doc:
            s.cursor = None

    def _project_step(self, s: Session, forward: bool) -> View:
        p = s.project
        state = p.store.undo_state(p.image_id)
        action = state.redo_action if forward else state.undo_action
        try:
            records = p.store.redo(p.image_id) if forward else p.store.undo(p.image_id)
        except (ProjectError, sqlite3.Error) as e:
            raise WorkbenchError(f"Could not {'redo' if forward else 'undo'}: {e}") from None
        if records is None:
            return self._view(s, "Nothing to redo." if forward else "Nothing to undo.")
        self._reload_document(s, records)
        return self._view(s, f"{'Redid' if forward else 'Undid'}: {action} (saved).")

    def _prefetch_after(self, sid: str) -> None:
        """Start embedding the image after the shown one (see ``Prefetcher``)."""
        s = self.sessions.peek(sid)
        p = s.project if s is not None else None
        if self.prefetcher is None or p is None:
            return
        ids = [i.id for i in p.store.images()]
        if len(ids) < 2 or p.image_id not in ids:
            return
        nxt = ids[(ids.index(p.image_id) + 1) % len(ids)]
        store = p.store
        self.prefetcher.request((str(store.path), nxt), lambda: store.load_pixels(nxt))

    def _show_image(self, s: Session, image: np.ndarray, name: str, doc: AnnotationDocument) -> None:
        """Put an image and its document in the session, resetting what belonged to the last."""
        s.image, s.name, s.doc = image, name, doc
        s.scale = cv.display_scale(image.shape[:2], self.max_display_side)
        s.embedding = None
        s.prompt, s.cursor, s.last_pick, s.preview, s.duplicates = Prompt(), None, None, [], []
        s.layer_key = s.sent_canvas_key = s.sent_table_key = None

    @staticmethod
    def _clear_image(s: Session) -> None:
        s.image, s.name, s.doc, s.embedding = None, "", None, None
        s.prompt, s.cursor, s.last_pick, s.preview, s.duplicates = Prompt(), None, None, [], []
        s.layer_key = s.layer = s.sent_canvas_key = s.sent_table_key = None
        if s.project is not None:
            s.project.image_id = s.project.doc = None

    # -- view options and filters --------------------------------------------------------
    def set_view(self, sid: str, alpha: float | None = None, outlines: bool | None = None,
                 only_selected: bool | None = None, coverage: bool | None = None) -> View:
        with self._session(sid) as s:
            v = s.view
            if alpha is not None:
                if not 0.0 <= float(alpha) <= 1.0:
                    raise WorkbenchError("alpha must be between 0 and 1")
                v.alpha = float(alpha)
            if outlines is not None:
                v.outlines = bool(outlines)
            if only_selected is not None:
                v.only_selected = bool(only_selected)
            if coverage is not None:
                v.coverage = bool(coverage)
            msg = self._coverage_text(s) if v.coverage and s.doc is not None else ""
            return self._view(s, msg)

    def set_filter(self, sid: str, min_iou: float = 0.0, min_stability: float = 0.0,
                   min_area: int = 0, review: str = "all", sort_by: str = "id",
                   descending: bool = False) -> View:
        if review not in REVIEW_FILTERS:
            raise WorkbenchError(f"review filter must be one of {', '.join(REVIEW_FILTERS)}")
        if sort_by not in SORT_KEYS:
            raise WorkbenchError(f"sort key must be one of {', '.join(SORT_KEYS)}")
        with self._session(sid) as s:
            s.filter = MaskFilter(float(min_iou or 0), float(min_stability or 0), int(min_area or 0),
                                  review, sort_by, bool(descending))
            if s.doc is None:
                return self._view(s, "")
            n, total = len(self._shown(s)), len(s.doc)
            return self._view(s, f"Showing {n} of {total} masks.")

    # -- reading -------------------------------------------------------------------------
    def _shown(self, s: Session) -> list:
        """Annotations the filter keeps, in z-order (bottom first)."""
        return [a for a in s.doc.annotations if s.filter.keeps(a)] if s.doc is not None else []

    def table_order(self, s: Session) -> list:
        return s.filter.sort(self._shown(s))

    def table(self, sid: str) -> list[list]:
        with self._session(sid) as s:
            return self._table(s)

    def _table(self, s: Session) -> list[list]:
        sel = s.doc.selection if s.doc is not None else frozenset()
        rows = []
        for a in self.table_order(s):
            mark = (("▶" if a.id == s.cursor else "") + ("●" if a.id in sel else "")
                    + ("" if a.visible else "◌"))
            rows.append([mark, a.id, a.label or "", a.source, _fmt(a.predicted_iou),
                         _fmt(a.stability_score), a.area, a.review])
        return rows

    def status(self, sid: str) -> str:
        with self._session(sid) as s:
            return self._status(s)

    def _status(self, s: Session) -> str:
        parts = [self.info.status]
        if s.project is not None:
            parts.append(self._project_status(s))
        if s.image is None:
            parts.append("no image")
        else:
            h, w = s.image.shape[:2]
            parts.append(f"{s.name} {w}x{h}")
            if s.embedding is None:
                parts.append("embedding: not computed")
            else:
                parts.append("embedding cached" if self._embedding_cached(s) else
                             "embedding held by this session (evicted from the cache)")
            if s.doc is not None:
                anns = s.doc.annotations
                counts = {r: sum(a.review == r for a in anns) for r in ("accepted", "pending", "rejected")}
                parts.append(f"{_plural(len(anns), 'mask')} ({counts['accepted']} accepted, "
                             f"{counts['pending']} pending, {counts['rejected']} rejected), "
                             f"{len(s.doc.selection)} selected")
        return " · ".join(parts)

    def _embedding_cached(self, s: Session) -> bool:
        cache = getattr(self.segmenter, "cache", None)
        if cache is not None and hasattr(s.embedding, "key"):
            return s.embedding.key in cache
        return self.segmenter.is_cached(s.image)

    # -- rendering -----------------------------------------------------------------------
    def canvas(self, sid: str) -> np.ndarray | None:
        """The canvas as it looks now (display pixels)."""
        with self._session(sid) as s:
            return self._canvas(s)

    def _canvas(self, s: Session) -> np.ndarray | None:
        if s.image is None:
            return None
        layer = self._layer(s)
        p = s.prompt
        if p.prediction is None and not p.points and p.box is None and p.corner is None:
            return layer
        return cv.draw_prompt(layer, p, s.scale, s.view.alpha)

    @staticmethod
    def _layer_key(s: Session) -> tuple:
        return (s.doc.version, astuple(s.view), astuple(s.filter), s.cursor, len(s.preview))

    @staticmethod
    def _prompt_key(s: Session) -> tuple:
        p = s.prompt
        return (tuple(p.points), tuple(p.labels), p.box, p.corner, p.choice, id(p.prediction))

    def _layer(self, s: Session) -> np.ndarray:
        """The masks layer (display pixels), re-rendered only when something it shows changed."""
        key = self._layer_key(s)
        if key == s.layer_key and s.layer is not None:
            return s.layer
        shown = self._shown(s)
        sel = set(s.doc.selection) | ({s.cursor} if s.cursor is not None else set())
        if s.view.only_selected:
            shown = [a for a in shown if a.id in sel]
        if s.view.coverage:
            accepted = [a.rle for a in s.doc.annotations if a.review == "accepted"]
            covered = (render.label_map_from_rles(accepted, s.image.shape[:2]) != 0 if accepted
                       else np.zeros(s.image.shape[:2], bool))
            full = cv.coverage_map(s.image, covered)
        else:
            rles = [a.rle for a in shown] + list(s.preview)
            ids = [a.id for a in shown] + [PREVIEW_COLOR_BASE + k for k in range(len(s.preview))]
            full = render.overlay(
                s.image, rles, alpha=s.view.alpha, colors=render.palette(ids), outlines=s.view.outlines,
                selected=[k for k, a in enumerate(shown) if a.id in sel],
                hidden=[k for k, a in enumerate(shown) if not a.visible],
                rejected=[k for k, a in enumerate(shown) if a.review == "rejected"],
                outline_width=max(1, round(1 / s.scale)), cache=self.renderer.cache,
            )
        s.layer = cv.to_display(full, s.scale)
        s.layer_key = key
        return s.layer

    def _coverage_text(self, s: Session) -> str:
        accepted = [a.rle for a in s.doc.annotations if a.review == "accepted"]
        if not accepted:
            return "Coverage: no accepted masks yet; everything is uncovered (magenta)."
        covered = render.label_map_from_rles(accepted, s.image.shape[:2]) != 0
        return f"Coverage: accepted masks cover {covered.mean():.1%} of the image; magenta is uncovered."

    def _view(self, s: Session, message: str) -> View:
        self._save_project(s)  # before anything reports success
        canvas = frame = None
        if self.browser_canvas:  # the browser draws: send it what changed, render nothing here
            frame = functools.partial(canvas_link.frame, s, message)
        elif s.image is not None:
            key = (self._layer_key(s), self._prompt_key(s))
            if key != s.sent_canvas_key:
                canvas = self._canvas(s)
                s.sent_canvas_key = key
        table = None
        if s.doc is not None:
            key = (s.doc.version, astuple(s.filter), s.cursor)
            if key != s.sent_table_key:
                table = self._table(s)
                s.sent_table_key = key
        cands = [(f"{pos + 1}: " + (f"IoU {score:.2f}" if score is not None else "no score")
                  + f" · {area:,} px", pos) for pos, score, area in s.prompt.candidates()]
        progress = self._progress_if_changed(s)
        return View(canvas=canvas, status=self._status(s), message=message, candidates=cands,
                    candidate=s.prompt.choice if cands else None, table=table, mode=s.mode,
                    progress=progress, frame=frame)

    def resend(self, sid: str) -> View:
        """A full View (nothing left out as unchanged), e.g. for a reloaded page."""
        with self._session(sid) as s:
            s.sent_canvas_key = s.sent_table_key = None
            canvas_link.forget(s)
            if s.project is not None:
                s.project.rows_key = None
            return self._view(s, "")

    # -- limits --------------------------------------------------------------------------
    def _need_room_for_masks(self, s: Session, n: int, what: str) -> None:
        cap, have = self.limits.max_masks, len(s.doc)
        if have + n > cap:
            raise WorkbenchError(
                f"Cannot {what}: this image has {_plural(have, 'mask')} and the limit is {cap} per image "
                "(--max-masks, ANNOTATOR_MAX_MASKS). Delete or merge masks first; nothing was changed.")

    def _fit_mask_cap(self, s: Session, records: list) -> tuple[list, str]:
        """The records that fit under the mask cap (best predicted IoU first), and a note."""
        room = max(0, self.limits.max_masks - len(s.doc))
        if len(records) <= room:
            return records, ""
        order = sorted(range(len(records)), key=lambda k: -(records[k].get("predicted_iou") or 0.0))
        kept = sorted(order[:room])
        return [records[k] for k in kept], (
            f" Kept the {room} best of {len(records)}: the image may hold {self.limits.max_masks} masks "
            "(--max-masks, ANNOTATOR_MAX_MASKS).")

    def _make_room(self, s: Session, extra: int, what: str) -> str:
        """Keep the session under its memory limit with ``extra`` more bytes: drop the masks
        kept for other images, oldest first, or refuse (nothing changed) when even that is not
        enough. Returns a note naming what was dropped, for the message."""
        limit = self.limits.session_bytes
        total = _session_bytes(s) + extra
        if total <= limit:
            return ""
        others = [k for k, d in s.documents.items() if d is not s.doc]
        if total - sum(s.documents[k].nbytes() for k in others) > limit:
            raise WorkbenchError(
                f"Cannot {what}: this session would hold {human_bytes(total)}, over its limit of "
                f"{human_bytes(limit)} (--max-session-mb, ANNOTATOR_MAX_SESSION_MB). Export, then delete "
                "masks you no longer need; nothing was changed.")
        dropped = []
        for k in others:
            if total <= limit:
                break
            doc = s.documents.pop(k)
            total -= doc.nbytes()
            if len(doc):
                dropped.append(f"{doc.image_id} ({_plural(len(doc), 'mask')})")
        if not dropped:
            return ""
        return (f" To stay under the session's memory limit ({human_bytes(limit)}), the masks kept for "
                f"{', '.join(dropped)} were dropped. Export before opening many images, or open a "
                "project (Project tab): it keeps every image's masks on disk.")

    # -- checks --------------------------------------------------------------------------
    def _need_image(self, s: Session) -> None:
        if s.image is None:
            raise WorkbenchError("Upload an image first (or pick an example).")

    def _need_embedding(self, s: Session) -> None:
        if s.embedding is None:
            raise WorkbenchError("The image embedding is still being computed; try again in a moment.")

    def _need_selection(self, s: Session, n: int, what: str) -> list[int]:
        self._need_image(s)
        ids = s.doc.selected()
        if len(ids) < n:
            need = "at least two masks" if n == 2 else "a mask"
            raise WorkbenchError(f"Select {need} to {what} (Select mode: click masks, or click "
                                 f"their rows in the table).")
        return ids

    def _targets(self, s: Session, what: str) -> list[int]:
        """The selection, or the mask under review when nothing is selected."""
        self._need_image(s)
        ids = s.doc.selected()
        if ids:
            return ids
        if s.cursor is not None and s.cursor in s.doc:
            return [s.cursor]
        raise WorkbenchError(f"Select masks to {what} first.")

    @staticmethod
    def _score_text(p: Prompt) -> str:
        if p.prediction is None:
            return ""
        score = p.score
        return f" · predicted IoU {score:.2f}" if score is not None else " · (no score: not SAM)"


def _release_session(sid: str, s: Session) -> None:
    """What a session holds outside the store: a running generator, its export folders."""
    s.cancel.set()  # a running "segment everything" stops at its next batch
    for folder in s.exports:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep_sessions(store_ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        store = store_ref()
        if store is None:
            return
        store.sweep()
        del store


def _image_bytes(size_hw: tuple[int, int], scale: float) -> int:
    """Memory an open image costs a session: its pixels, a prompt's three candidate masks
    (one byte a pixel each), the rendered canvas and SAM's embedding."""
    h, w = size_hw
    return h * w * 3 + h * w * 3 + int(h * scale) * int(w * scale) * 3 + EMBEDDING_BYTES


def _session_bytes(s: Session) -> int:
    """Memory the session holds: the open image (``_image_bytes``) and every document kept."""
    total = sum(doc.nbytes() for doc in s.documents.values())
    if s.image is not None:
        total += _image_bytes(s.image.shape[:2], s.scale)
    return total


def _copy_prompt(p: Prompt) -> Prompt:
    return Prompt(points=list(p.points), labels=list(p.labels), box=p.box, corner=p.corner,
                  prediction=p.prediction, order=list(p.order), choice=p.choice)


@gpu
def _embed(segmenter, image: np.ndarray):
    """The image encoder (on ZeroGPU, the one step that needs the GPU per image)."""
    return segmenter.embed(image)


@gpu(duration=120)
def _generate(segmenter, image: np.ndarray, params: dict, cancel, model_lock=None):
    """SAM's automatic generator as a stream of updates (see ``MaskGenerator.iter_generate``)."""
    generator = MaskGenerator(segmenter, output_mode="coco_rle", model_lock=model_lock, **params)
    yield from generator.iter_generate(image, cancel=cancel)


def _write_rgb_png(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def _quality(a) -> float:
    """What makes the best of a group of duplicates: SAM's predicted IoU, else stability."""
    for v in (a.predicted_iou, a.stability_score):
        if v is not None:
            return v
    return 0.0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _ids_text(ids) -> str:
    ids = list(ids)
    if len(ids) == 1:
        return f"mask {ids[0]}"
    return "masks " + ", ".join(str(i) for i in ids)
