"""Find all (SAM 3): every instance of a text and/or exemplar boxes, as pending masks.

The masks are labelled with the text, added best score first (lowest id) in one undoable
step, and the review cursor starts on the best, so Y/X/J/K review them like any pending
masks. SAM 3's score is a detection confidence, not a predicted IoU: it is kept in the mask's
``meta`` (with the model and the concept) and exported as ``score``.
"""

from __future__ import annotations

from annotator.annotations.rle import normalize as to_rle
from annotator.app import memory
from annotator.app.checks import need_image
from annotator.app.context import Context
from annotator.app.state import Session, WorkbenchError
from annotator.app.text import plural


def find_all(
    ctx: Context, s: Session, text: str | None = None, boxes=None, box_labels=None, threshold: float = 0.5
) -> str:
    finder = getattr(ctx.segmenter, "finder", None)
    if finder is None:
        raise WorkbenchError(
            f"Find all needs SAM 3, and this server runs {ctx.info.model_tag}. Start it "
            "with --model sam3 (see the README for getting the checkpoint)."
        )
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise WorkbenchError("the score threshold is a number between 0 and 1") from None
    need_image(s)
    try:
        with ctx.model_lock:
            found = finder.find_all(s.image, text, boxes, box_labels, threshold)
    except ValueError as e:
        raise WorkbenchError(f"{e}. Nothing was changed.") from None
    words = " ".join(str(text or "").split()) or None
    what = f"'{words}'" if words else "the exemplar boxes' object"
    if not found:
        return (
            f"Found no instance of {what} scoring {threshold:.2f} or more; lower the threshold or draw an exemplar box."
        )
    records = [
        {
            "segmentation": inst.mask,
            "meta": {"model": ctx.info.model_tag, "score": round(inst.score, 4), "concept": words or "exemplar boxes"},
        }
        for inst in found
        if inst.mask.any()
    ]
    if not records:
        return f"Found {plural(len(found), 'instance')} of {what}, all with empty masks; nothing was added."
    memory.need_room_for_masks(ctx.limits, s, 1, "add the instances found")
    kept, capped = records[: max(0, ctx.limits.max_masks - len(s.doc))], ""
    if len(kept) < len(records):
        capped = (
            f" Kept the {len(kept)} best of {len(records)}: the image may hold "
            f"{ctx.limits.max_masks} masks (--max-masks, ANNOTATOR_MAX_MASKS)."
        )
    rles = [to_rle(r["segmentation"], s.doc.size) for r in kept]
    dropped = memory.make_room(ctx.limits, s, sum(len(r["counts"]) for r in rles), "add these masks")
    items = [{**r, "segmentation": rle} for r, rle in zip(kept, rles, strict=True)]
    ids = s.doc.add_many(items, source="concept", label=words, action=f"find all {what}: {plural(len(items), 'mask')}")
    s.cursor = ids[0] if ids else None
    scores = ", ".join(f"{r['meta']['score']:.2f}" for r in kept[:5])
    return (
        f"Found {plural(len(ids), 'instance')} of {what} (scores {scores}{', …' if len(kept) > 5 else ''})."
        f"{capped}{dropped} Reviewing mask {s.cursor}: Y accept, X reject, J/K next/previous."
    )


def with_prompt_box(s: Session, boxes, box_labels, exemplar: str) -> tuple[list | None, list | None]:
    """``boxes`` plus the box drawn on the canvas (the prompt's) as a positive or negative
    exemplar (``exemplar`` "positive" / "negative"; "none" leaves the boxes as given)."""
    if exemplar in (None, "", "none"):
        return boxes, box_labels
    if exemplar not in ("positive", "negative"):
        raise WorkbenchError(f"an exemplar box is positive or negative, got {exemplar!r}")
    need_image(s)
    if s.prompt.box is None:
        raise WorkbenchError("Draw a box first (Box mode, two clicks) to use it as an exemplar.")
    boxes = [list(b) for b in (boxes or [])]
    labels = list(box_labels) if box_labels is not None else [1] * len(boxes)
    return boxes + [[float(v) for v in s.prompt.box]], labels + [1 if exemplar == "positive" else 0]
