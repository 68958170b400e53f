"""What every tab's wiring shares: the session key, Workbench errors as toasts, the
concurrency groups, and ``Outputs``, the components a ``View`` is shown in.

Handlers return ``Outputs.show(view)``, a dict ``{component: value}``: Gradio leaves an
output that is not in the dict as it is, so a View's "unchanged" (``None``) canvas, table
or image list is simply left out, and no handler writes outputs by position. The order of
each event's outputs list is still what an API client sees (canvas, status, message,
candidates, table, image list, then the event's own).
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
from dataclasses import dataclass
from importlib import resources

import gradio as gr

from annotator.app.workbench import View, WorkbenchError

MODEL = "model"  # the concurrency group of the events that run the model once (upload, clicks)
EVERYTHING = "everything"  # segment-everything runs; they share the model call by call (Workbench.model_lock)
QUICK = {"show_progress": "minimal"}  # no overlay over the canvas for fast actions


def model_events(wb) -> dict:
    """Concurrency of the events that run the model once (uploads, clicks, next image): one
    group, ``Limits.model_workers`` sessions at a time. The model itself runs one call at a
    time (``Workbench.model_lock``) and one session's events run in the order they came (its
    lock is ordered), so the limit decides how many sessions' drawing and encoding overlap,
    not the model's use: with 1, every click waited for every other session's whole handler."""
    return {"concurrency_limit": wb.limits.model_workers, "concurrency_id": MODEL}


def static_text(name: str) -> str:
    """A file of ``static/`` (the page's css, the key shortcuts' js, the help text)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def sid(request: gr.Request) -> str:
    """The browser session's key in the Workbench."""
    return request.session_hash


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


def user_errors(fn):
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


@dataclass(frozen=True, eq=False)
class Outputs:
    """The components that show a View, and the page-level ones several tabs' events write.

    ``view`` is the outputs list of every event that shows a View; ``project`` adds what a
    project event changes as well."""

    canvas: gr.HTML  # the annotation canvas (canvas.component): shows View.frame
    status: gr.Textbox
    message: gr.Textbox
    candidates: gr.Radio
    table: gr.Dataframe  # the masks (Masks tab)
    progress: gr.Dataframe  # the project's images (Project tab)
    mode: gr.Radio  # (hidden) an output of accept only, which resets it: a late response to any
    # other event must never switch it back; the canvas learns it from its frames
    tabs: gr.Tabs
    resume: gr.BrowserState  # what the browser keeps to reopen its project after a reload
    nav_row: gr.Row  # the image navigation, shown in a project
    project_name: gr.Dropdown
    alpha: gr.Slider  # the view options (hidden: the canvas gets them in its frames; a project
    # restores its own)
    outlines: gr.Checkbox
    only_selected: gr.Checkbox
    coverage: gr.Checkbox

    @property
    def options(self) -> list:
        return [self.alpha, self.outlines, self.only_selected, self.coverage]

    @property
    def view(self) -> list:
        return [self.canvas, self.status, self.message, self.candidates, self.table, self.progress]

    @property
    def project(self) -> list:
        return [*self.view, self.resume, self.nav_row, self.project_name, *self.options]

    def show(self, v: View) -> dict:
        """The View in the ``view`` components; what it leaves out as unchanged is not sent."""
        shown = {
            self.status: v.status,
            self.message: v.message,
            self.candidates: gr.Radio(choices=v.candidates, value=v.candidate),
        }
        if v.frame is not None:  # what changed on the canvas, drawn by the browser
            shown[self.canvas] = v.frame()
        if v.table is not None:
            shown[self.table] = v.table
        if v.progress is not None:
            shown[self.progress] = v.progress
        return shown


def action(method, out: Outputs):
    """A handler for a Workbench method that takes only the session (undo, merge, ...)."""

    @user_errors
    def run(request: gr.Request):
        return out.show(method(sid(request)))

    run.__name__ = method.__name__
    return run
