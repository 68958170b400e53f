"""A session's memory and the mask cap: what it holds, and room made or refused.

Estimates, not measurements: an open image costs its pixels, a prompt's three candidate
masks, the rendered canvas and one embedding of the loaded model (its ``embedding_bytes``:
4 MB for SAM 1, 16 MB for SAM 2.1); every document kept costs its RLE bytes with undo
history (``AnnotationDocument.nbytes``).
"""

from __future__ import annotations

from annotator.app.state import EMBEDDING_BYTES, Session, WorkbenchError
from annotator.app.text import plural
from annotator.limits import Limits, human_bytes


def model_embedding_bytes(segmenter) -> int:
    """Bytes of one image's embedding for the loaded model (``Predictor.embedding_bytes``)."""
    return int(getattr(segmenter, "embedding_bytes", EMBEDDING_BYTES))


def image_bytes(size_hw: tuple[int, int], scale: float, embedding_bytes: int = EMBEDDING_BYTES) -> int:
    """Memory an open image costs a session: its pixels, a prompt's three candidate masks
    (one byte a pixel each), the rendered canvas and the model's embedding of it."""
    h, w = size_hw
    return h * w * 3 + h * w * 3 + int(h * scale) * int(w * scale) * 3 + embedding_bytes


def session_bytes(s: Session) -> int:
    """Memory the session holds: the open image (``image_bytes``) and every document kept."""
    total = sum(doc.nbytes() for doc in s.documents.values())
    if s.image is not None:
        total += image_bytes(s.image.shape[:2], s.scale, s.embedding_bytes)
    return total


def need_room_for_masks(limits: Limits, s: Session, n: int, what: str) -> None:
    cap, have = limits.max_masks, len(s.doc)
    if have + n > cap:
        raise WorkbenchError(
            f"Cannot {what}: this image has {plural(have, 'mask')} and the limit is {cap} per image "
            "(--max-masks, ANNOTATOR_MAX_MASKS). Delete or merge masks first; nothing was changed."
        )


def fit_mask_cap(limits: Limits, s: Session, records: list, replacing: int = 0) -> tuple[list, str]:
    """The records that fit under the mask cap (best predicted IoU first), and a note.
    Room is made only by the ``replacing`` masks these records supersede, never by
    dropping masks already reviewed."""
    room = max(0, limits.max_masks - (len(s.doc) - replacing))
    if len(records) <= room:
        return records, ""
    order = sorted(range(len(records)), key=lambda k: -(records[k].get("predicted_iou") or 0.0))
    kept = sorted(order[:room])
    return [records[k] for k in kept], (
        f" Kept the {room} best of {len(records)}: the image may hold {limits.max_masks} masks "
        "(--max-masks, ANNOTATOR_MAX_MASKS)."
    )


def make_room(limits: Limits, s: Session, extra: int, what: str) -> str:
    """Keep the session under its memory limit with ``extra`` more bytes: drop the masks
    kept for other images, oldest first, or refuse (nothing changed) when even that is not
    enough. Returns a note naming what was dropped, for the message."""
    limit = limits.session_bytes
    total = session_bytes(s) + extra
    if total <= limit:
        return ""
    others = [k for k, d in s.documents.items() if d is not s.doc]
    if total - sum(s.documents[k].nbytes() for k in others) > limit:
        raise WorkbenchError(
            f"Cannot {what}: this session would hold {human_bytes(total)}, over its limit of "
            f"{human_bytes(limit)} (--max-session-mb, ANNOTATOR_MAX_SESSION_MB). Export, then delete "
            "masks you no longer need; nothing was changed."
        )
    dropped = []
    for k in others:
        if total <= limit:
            break
        doc = s.documents.pop(k)
        total -= doc.nbytes()
        if len(doc):
            dropped.append(f"{doc.image_id} ({plural(len(doc), 'mask')})")
    if not dropped:
        return ""
    return (
        f" To stay under the session's memory limit ({human_bytes(limit)}), the masks kept for "
        f"{', '.join(dropped)} were dropped. Export before opening many images, or open a "
        "project (Project tab): it keeps every image's masks on disk."
    )
