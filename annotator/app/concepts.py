"""Find all (SAM 3): every instance of a text and/or exemplar boxes, as pending masks.

The masks are labelled with the text, added best score first (lowest id) in one undoable
step, and the review cursor starts on the best, so Y/X/J/K review them like any pending
masks. SAM 3's score is a detection confidence, not a predicted IoU: it is kept in the mask's
``meta`` (with the model and the concept) and exported as ``score``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from annotator.amg import batch
from annotator.annotations.rle import normalize as to_rle
from annotator.app import memory, projects
from annotator.app.checks import need_image
from annotator.app.context import Context
from annotator.app.state import AmgStep, Session, WorkbenchError
from annotator.app.text import plural
from annotator.app.view import make_view
from annotator.models.hf_sam3 import check_concept


def need_finder(ctx: Context):
    finder = getattr(ctx.segmenter, "finder", None)
    if finder is None:
        raise WorkbenchError(
            f"Find all needs SAM 3, and this server runs {ctx.info.model_tag}. Start it "
            "with --model sam3 (see the README for getting the checkpoint)."
        )
    return finder


def check_threshold(threshold) -> float:
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise WorkbenchError("the score threshold is a number between 0 and 1") from None
    if not 0.0 <= threshold <= 1.0:
        raise WorkbenchError(f"the score threshold is between 0 and 1, got {threshold:g}")
    return threshold


def find_all(
    ctx: Context, s: Session, text: str | None = None, boxes=None, box_labels=None, threshold: float = 0.5
) -> str:
    finder = need_finder(ctx)
    threshold = check_threshold(threshold)
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


def run_project(ctx: Context, s: Session, text: str | None, threshold: float = 0.5) -> Iterator[AmgStep]:
    """Find all ``text`` in every image of the session's project: a step per image, each
    image's instances saved (pending, labelled with the text, best first) before its step,
    so ``s.find_cancel`` (or closing the project) stops between images and keeps what was
    found. A run again resumes: images already searched for the text are skipped, as are
    images marked done; masks already there, accepted or not, are never changed. The model
    lock is taken image by image, so clicks (this session's too) are answered meanwhile."""
    with s.lock:
        p = projects.need_project(s)
        finder = need_finder(ctx)
        threshold = check_threshold(threshold)
        try:
            words, _, _ = check_concept(text, None, None, (1, 1))
        except ValueError as e:
            raise WorkbenchError(f"{e}. Nothing was changed.") from None
        if s.find_running:
            raise WorkbenchError("Find all is already running over this project; cancel it or wait for it.")
        store = p.store
        infos = store.images()
        if not infos:
            raise WorkbenchError(projects.empty_message(s))
        marked_done = [i for i in infos if i.status == "done"]
        searched = [i for i in infos if i.status != "done" and words in batch.concepts_searched(store, i.id)]
        searched_ids = {i.id for i in searched}
        todo = [i for i in infos if i.status != "done" and i.id not in searched_ids]
        s.find_cancel = threading.Event()
        skipped = _skipped_text(words, searched, marked_done)
        if not todo:
            nothing = AmgStep(make_view(ctx, s, f"Nothing to search: {skipped.strip()}"), 0, 0, None, True)
        else:
            start = make_view(ctx, s, f"Find all '{words}' in {plural(len(todo), 'image')}.{skipped}")
            s.find_running = True
    # steps are yielded without the session lock (see annotator.app.everything)
    if not todo:
        yield nothing
        return
    try:
        yield from _run(ctx, s, store, finder, words, threshold, todo, skipped, start)
    finally:
        s.find_running = False


def _run(ctx, s, store, finder, words, threshold, todo, skipped, start) -> Iterator[AmgStep]:
    names = {i.id: i.name for i in todo}
    cancel = s.find_cancel
    yield AmgStep(start, 0, len(todo), None, False)
    result, t0, stopped, hits = batch.BatchResult(), time.perf_counter(), "", 0
    steps = batch.find_concepts(
        store,
        finder,
        [i.id for i in todo],
        [words],
        threshold=threshold,
        model=ctx.info.model_tag,
        needs=batch.needs_concepts(store, [words]),
        model_lock=ctx.model_lock.yielding(),
        max_masks=ctx.limits.max_masks,
        result=result,
        progress=False,
    )
    try:
        for k, (image_id, added) in enumerate(steps, 1):
            hits += added > 0
            with s.lock:
                if s.project is None or s.project.store is not store:
                    stopped = " Stopped: the project was closed."
                    break
                _show_saved(s, image_id)
                left = len(todo) - len(result.processed) - len(result.failed)
                eta = (time.perf_counter() - t0) / k * left if left > 0 else None
                view = make_view(
                    ctx,
                    s,
                    f"Find all '{words}': image {k} of {len(todo)} ({names[image_id]}: "
                    f"{plural(added, 'instance')}), {plural(result.n_masks, 'instance')} so far"
                    + (f", about {eta:.0f} s left." if eta is not None else "."),
                )
            yield AmgStep(view, k, len(todo), eta, False)
            if cancel.is_set():
                stopped = (
                    f" Cancelled after {plural(len(result.processed), 'image')} of {len(todo)}; "
                    "kept what was found. Run it again to go on with the rest."
                )
                break
    finally:
        steps.close()
    with s.lock:
        failed = "".join(f" Could not read {names.get(i, i)}: {why}." for i, why in result.failed.items())
        message = (
            f"Found {plural(result.n_masks, 'instance')} of '{words}' in "
            f"{plural(len(result.processed), 'image')} searched ({hits} with some) in "
            f"{time.perf_counter() - t0:.1f} s, added as pending masks labelled '{words}'; masks "
            f"already there were kept as they were.{stopped}{skipped}{failed}"
            " Review them image by image: Y accept, X reject, J/K next/previous."
        )
        last = AmgStep(make_view(ctx, s, message), len(result.processed), len(todo), 0.0, True)
    yield last


def _skipped_text(words: str, searched: list, marked_done: list) -> str:
    parts = []
    if searched:
        parts.append(f"{plural(len(searched), 'image')} already searched for '{words}'")
    if marked_done:
        parts.append(f"{plural(len(marked_done), 'image')} marked done")
    return f" Skipped {' and '.join(parts)}." if parts else ""


def _show_saved(s: Session, image_id: int) -> None:
    """The shown image got masks from the run: show what is saved now (the run added to
    what was saved; every edit of this session is saved as it is made)."""
    p = s.project
    if p.image_id == image_id and projects.in_project(s) and s.doc.version == p.saved_version:
        projects.reload_document(s)
    p.rows_key = None  # the image list's counts changed
