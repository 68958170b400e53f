"""Opening an image in a session and computing its embedding.

Each image keeps its own document for the session's life: opening an image again brings
its masks back. An image is read and checked (pixel limit, memory) before anything in the
session changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotator.annotations import markers
from annotator.annotations.document import AnnotationDocument
from annotator.app import memory
from annotator.app.checks import need_image
from annotator.app.context import Context, embed
from annotator.app.state import COMPUTING, MAX_DOCUMENTS, Session, WorkbenchError
from annotator.app.text import plural
from annotator.formats.filenames import safe_name
from annotator.formats.images import ImageError, ImageTooLarge, as_rgb_array, load_image
from annotator.limits import human_bytes
from annotator.models.embeddings import image_key
from annotator.models.prompt import Prompt


def read(ctx: Context, source, name: str | None) -> tuple[np.ndarray, str, list[str]]:
    """The image (path, bytes, PIL or array) as RGB, its safe name, and notes on conversion;
    a bad or too large image is a ``WorkbenchError`` that names the fix."""
    notes: list[str] = []
    limit = ctx.limits.max_pixels
    try:
        if isinstance(source, np.ndarray):
            image = as_rgb_array(source)
            if image.shape[0] * image.shape[1] > limit:
                raise ImageTooLarge(
                    f"the image is {image.shape[1]}x{image.shape[0]} pixels; the limit is {limit / 1e6:g} megapixels"
                )
        else:
            image = load_image(source, max_pixels=limit, notes=notes)
    except ImageTooLarge as e:
        raise WorkbenchError(
            f"{e}. Downscale it, or start the server with a larger --max-pixels "
            "(ANNOTATOR_MAX_PIXELS). Nothing was changed."
        ) from None
    except ImageError as e:
        raise WorkbenchError(
            f"{e}. Open a PNG, JPEG, WebP, TIFF, BMP or GIF image instead. Nothing was changed."
        ) from None
    if name is None:
        name = Path(source).name if isinstance(source, (str, Path)) else "image"
    return image, safe_name(name), notes


def open_image(ctx: Context, s: Session, image: np.ndarray, name: str, notes: list[str]) -> str:
    """Show ``image`` (from ``read``) with its document, new or kept from before."""
    scale = markers.display_scale(image.shape[:2], ctx.max_display_side)
    key = image_key(image)
    # checked before anything changes: what this image needs can never be dropped
    reopened = s.documents.get(key)
    need = memory.image_bytes(image.shape[:2], scale, memory.model_embedding_bytes(ctx.segmenter)) + (
        reopened.nbytes() if reopened is not None else 0
    )
    if need > ctx.limits.session_bytes:
        raise WorkbenchError(
            f"{name} ({image.shape[1]}x{image.shape[0]}) needs about {human_bytes(need)} of memory "
            f"to annotate; a session may use {human_bytes(ctx.limits.session_bytes)} "
            "(--max-session-mb, ANNOTATOR_MAX_SESSION_MB). Open a smaller image; nothing was changed."
        )
    s.cancel.set()  # a "segment everything" still running on the previous image stops
    doc = s.documents.pop(key, None)
    again = doc is not None and len(doc) > 0
    show_image(ctx, s, image, name, doc if doc is not None else AnnotationDocument(*image.shape[:2], image_id=name))
    s.layer = None
    s.documents[key] = s.doc
    # forget the oldest images without masks beyond MAX_DOCUMENTS; masks are dropped only by
    # the memory limit, and then the message says so (memory.make_room)
    for k in [k for k, d in s.documents.items() if len(d) == 0 and d is not s.doc]:
        if len(s.documents) <= MAX_DOCUMENTS:
            break
        del s.documents[k]
    dropped = memory.make_room(ctx.limits, s, 0, "open this image")
    h, w = image.shape[:2]
    shown = "" if s.scale == 1 else f", shown at {s.scale:.0%}"
    n = len(s.doc)
    back = f" Its {plural(n, 'mask')} from before {'is' if n == 1 else 'are'} back." if again else ""
    s.note = ("".join(f" Note: {t}." for t in notes) + dropped).strip()
    note = f" {s.note}" if s.note else ""
    return f"{name}: {w}x{h}{shown}.{back}{note} {COMPUTING}"


def encode(ctx: Context, s: Session, sid: str) -> str:
    """Compute (or take from the cache) the shown image's embedding."""
    need_image(s)
    cached = ctx.segmenter.is_cached(s.image)
    if ctx.prefetcher is not None and not cached:
        ctx.prefetcher.cancel(sid)  # its prefetch was for where it no longer is
    with ctx.model_lock:
        s.embedding = embed(ctx.segmenter, s.image)
        prepare = getattr(ctx.segmenter, "prepare", None)  # (SAM: the first click's per-image decoder work)
        if prepare is not None:
            prepare(s.embedding)
    what = "from the cache" if cached else "computed"
    note, s.note = (s.note + " " if s.note else ""), ""
    return f"{note}Embedding {what}. Click on the image to segment an object."


def show_image(ctx: Context, s: Session, image: np.ndarray, name: str, doc: AnnotationDocument) -> None:
    """Put an image and its document in the session, resetting what belonged to the last."""
    s.image, s.name, s.doc = image, name, doc
    s.scale = markers.display_scale(image.shape[:2], ctx.max_display_side)
    s.embedding = None
    s.embedding_bytes = memory.model_embedding_bytes(ctx.segmenter)
    s.prompt, s.cursor, s.last_pick, s.preview, s.duplicates = Prompt(), None, None, [], []
    s.layer_key = s.sent_canvas_key = s.sent_table_key = None


def clear_image(s: Session) -> None:
    s.image, s.name, s.doc, s.embedding = None, "", None, None
    s.prompt, s.cursor, s.last_pick, s.preview, s.duplicates = Prompt(), None, None, [], []
    s.layer_key = s.layer = s.sent_canvas_key = s.sent_table_key = None
    if s.project is not None:
        s.project.image_id = s.project.doc = None
