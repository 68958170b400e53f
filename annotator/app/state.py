"""What a browser tab's session holds, and the plain data the app's actions return.

``Session`` is one tab's state (its image, embedding, document, prompt, view options);
``View`` is what the UI shows after an action. Both are plain dataclasses: the concern
modules (``prompting``, ``editing``, ``review``, ...) change a Session, ``view`` renders it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.amg.params import APP_DEFAULTS
from annotator.annotations.document import AnnotationDocument
from annotator.models.prompt import Prompt

MODES = ("positive", "negative", "box", "select")
COMPUTING = "Computing the image embedding…"
MAX_DOCUMENTS = 16  # per session: empty documents kept for reopening (ones with masks are all kept)
KEEP_EXPORTS = 3  # per session: export folders kept for download
# one SAM 1 image embedding (float32); the session counts the loaded model's own
# (``Predictor.embedding_bytes``: SAM 2.1 and SAM 3 keep several feature maps)
EMBEDDING_BYTES = 256 * 64 * 64 * 4
SORT_KEYS = ("id", "predicted_iou", "stability_score", "area")
REVIEW_FILTERS = ("all", "pending", "accepted", "rejected")
PREVIEW_COLOR_BASE = 1 << 20  # palette keys for masks still being found, apart from real ids
# "Segment everything" parameters the app exposes: SAM's names and defaults
AMG_DEFAULTS = APP_DEFAULTS
# first column: ▶ the mask under review, ● selected, "hidden" hidden
TABLE_HEADERS = ["", "id", "label", "source", "IoU", "stab.", "area", "review"]


class OrderedLock:
    """A re-entrant lock granted in the order it was asked for. A session's events may run on
    several server threads at once; waiting on this lock, they run one at a time and in the
    order they came (a plain lock wakes any waiter, so six fast clicks could be applied out of
    order, and "undo" would remove another point than the last one clicked)."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()  # tickets of waiters that timed out
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``threading.RLock.acquire``: False when not blocking and the lock is taken or
        asked for, or when ``timeout`` seconds pass first (that place in the line is given up)."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if not blocking and (self._owner is not None or self._next_ticket != self._serving):
                return False
            ticket = self._next_ticket
            self._next_ticket += 1
            if not self._cond.wait_for(lambda: self._serving == ticket, None if timeout < 0 else timeout):
                self._abandoned.add(ticket)
                return False
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a session lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                while self._serving in self._abandoned:  # nobody waits there any more
                    self._abandoned.discard(self._serving)
                    self._serving += 1
                self._cond.notify_all()

    def waiting(self) -> int:
        """Threads waiting for the lock now."""
        with self._cond:
            return self._next_ticket - self._serving - (self._owner is not None) - len(self._abandoned)

    def __enter__(self) -> OrderedLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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
        return not (
            self.min_stability > 0 and ann.stability_score is not None and ann.stability_score < self.min_stability
        )

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
    # a running "find all in every image" of the project; apart from ``cancel``, which opening
    # another image sets, since the project run goes on while the person moves between images
    find_cancel: threading.Event = field(default_factory=threading.Event)
    find_running: bool = False  # one such run per session: two would add an image's masks twice
    amg_params: dict = field(default_factory=dict)
    preview: list = field(default_factory=list)  # RLEs a running "segment everything" has found
    duplicates: list = field(default_factory=list)  # groups of ids (best first) from find_duplicates
    lock: OrderedLock = field(default_factory=lambda: OrderedLock())
    exports: list = field(default_factory=list)  # folders written by export, removed on free
    documents: OrderedDict = field(default_factory=OrderedDict)  # image content key -> its document
    # what the canvas layer under the prompt was last rendered from, and the result
    layer_key: tuple | None = None
    layer: np.ndarray | None = None
    sent_canvas_key: tuple | None = None
    sent_table_key: tuple | None = None
    embedding_bytes: int = EMBEDDING_BYTES  # the model's, set when an image is shown (memory estimate)
    note: str = ""  # what opening the image had to say (animated, masks dropped), kept for encode
    project: OpenProject | None = None
    notice: str = ""  # said once, before the next action's message (e.g. why a session was freed)
    canvas: object = None  # annotator.app.canvas_link.BrowserCanvas: what the browser canvas holds
    classes: object = None  # annotations.classes.ClassList (app.classes); None: not read yet


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
    has_image: bool = False  # False: no image is shown (the canvas is cleared)
    # the browser canvas's next frame (Context.browser_canvas), made when the View is shown,
    # so no numbered frame is made and then lost when one call makes several Views
    frame: Callable[[], dict] | None = None
    options: ViewOptions | None = None  # the view options in force (a project restores its own)


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
