"""Segment everything in a session: SAM's automatic generator, a step per point batch.

The generator takes the model lock for its model calls only, so other sessions' clicks
get in between, also while it post-processes a batch. Steps are yielded without holding
the session lock: Gradio resumes a generator on another worker thread (an RLock cannot be
released there), and a generator the client abandons would keep the session locked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from annotator.amg.generator import Cancelled, MaskGenerator
from annotator.app import memory
from annotator.app.checks import need_embedding, need_image
from annotator.app.context import Context, generate
from annotator.app.state import AMG_DEFAULTS, AmgStep, Session, WorkbenchError
from annotator.app.text import plural
from annotator.app.view import make_view

INT_PARAMS = ("points_per_side", "points_per_batch", "crop_n_layers", "min_mask_region_area")
FLOAT_PARAMS = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


def check_params(ctx: Context, params: dict) -> dict:
    """SAM's parameters (``AMG_DEFAULTS`` for those not given), checked by the generator."""
    if ctx.info.backend != "sam":
        raise WorkbenchError(
            "Segment everything needs SAM; the classical backend (GrabCut) "
            "cannot do it. Start the app with SAM weights."
        )
    unknown = set(params) - set(AMG_DEFAULTS)
    if unknown:
        raise WorkbenchError(f"unknown segment-everything parameters: {', '.join(sorted(unknown))}")
    p = dict(AMG_DEFAULTS)
    p.update({k: v for k, v in params.items() if v is not None})
    for k in INT_PARAMS:
        p[k] = int(p[k])
    for k in FLOAT_PARAMS:
        p[k] = float(p[k])
    try:
        MaskGenerator(ctx.segmenter, output_mode="coco_rle", **p)  # checks the values
    except (ValueError, TypeError) as e:
        raise WorkbenchError(str(e)) from None
    return p


def run(ctx: Context, s: Session, **params) -> Iterator[AmgStep]:
    """Yield a step per point batch (its masks drawn as a provisional preview) and a final
    step once the deduplicated masks are in the document (one undoable edit, review
    "pending"). ``s.cancel`` stops it after the current batch; the masks found so far are
    kept."""
    with s.lock:
        need_image(s)
        need_embedding(s)
        p = check_params(ctx, params)
        s.cancel = threading.Event()
        cancel, image, doc = s.cancel, s.image, s.doc
        s.preview = []
        s.amg_params = p
    t0 = time.perf_counter()
    records, note, counts = None, "", None
    try:
        # model call by model call, each after any waiting click (ModelLock.yielding)
        for update in generate(ctx.segmenter, image, p, cancel, ctx.model_lock.yielding()):
            if update.final:
                records, counts = update.records, update.counts
                break
            with s.lock:
                if s.doc is not doc:  # another image was opened meanwhile
                    return
                s.preview.extend(r["segmentation"] for r in update.records)
                pr = update.progress
                eta = f", about {pr.eta_s:.0f} s left" if pr.eta_s is not None else ""
                view = make_view(
                    ctx,
                    s,
                    f"Segment everything: batch {pr.done} of {pr.total}, {len(s.preview)} candidate masks so far{eta}.",
                )
            yield AmgStep(view, pr.done, pr.total, pr.eta_s, False)
    except Cancelled as e:
        records, counts = e.records, e.counts
        note = f" Cancelled after {e.done} of {e.total} batches; kept what was found."
    finally:
        with s.lock:
            s.preview = []
    with s.lock:
        if s.doc is not doc:
            return
        message = _add_records(ctx, s, records or [], note, t0, counts, p)
        last = AmgStep(make_view(ctx, s, message), 1, 1, 0.0, True)
    yield last


def _add_records(ctx: Context, s: Session, records: list, note: str, t0: float, counts, p: dict) -> str:
    """Put the run's masks in the document (one undoable edit) and say what happened."""
    doc = s.doc
    # a re-run supersedes the previous run's masks nobody has reviewed or labelled yet; a run
    # that finds nothing leaves them
    replace = (
        [a.id for a in doc.annotations if a.source == "auto" and a.review == "pending" and a.label is None]
        if records
        else []
    )
    records, capped = memory.fit_mask_cap(ctx.limits, s, records, replacing=len(replace))
    extra = sum(len(r["segmentation"]["counts"]) for r in records)
    try:
        dropped = memory.make_room(ctx.limits, s, extra, "add these masks")
    except WorkbenchError as e:
        return f"Segment everything found {plural(len(records), 'mask')} but kept none: {e}"
    action = f"segment everything: {plural(len(records), 'mask')}"
    ids = (
        doc.add_many(records, source="auto", action=action, replace=replace, meta={"model": ctx.info.model_tag})
        if records
        else []
    )
    if s.cursor is not None and s.cursor not in doc:
        s.cursor = None
    secs = time.perf_counter() - t0
    outcome = replaced_text(doc, replace) + REVIEW_HINT if ids else none_found_text(counts, p)
    return f"Segment everything found {plural(len(ids), 'mask')} in {secs:.1f} s.{note}{capped}{dropped}{outcome}"


REVIEW_HINT = " Filter and sort them in the Masks tab; review with J (next), Y (accept), X (reject)."


def replaced_text(doc, replaced: list) -> str:
    """What a re-run of segment everything replaced and what it kept."""
    if not replaced:
        return ""
    auto = [a for a in doc.annotations if a.source == "auto"]
    kept = {r: sum(a.review == r for a in auto) for r in ("accepted", "rejected")}
    labelled = sum(a.review == "pending" and a.label is not None for a in auto)
    keep_text = ", ".join(
        f"{n} {what}"
        for what, n in (("accepted", kept["accepted"]), ("rejected", kept["rejected"]), ("labelled", labelled))
        if n
    )
    return (
        f" Replaced the previous run's {plural(len(replaced), 'pending mask')}"
        + (f"; kept its reviewed ones ({keep_text})." if keep_text else ".")
        + " Undo brings them back."
    )


def none_found_text(counts, p: dict) -> str:
    """Why a run kept no mask: the thresholds that removed the candidates."""
    if counts is None or counts.candidates == 0:
        return ""
    n = counts.candidates
    iou, stab = p["pred_iou_thresh"], p["stability_score_thresh"]
    edge = " (or touched a crop edge)" if p.get("crop_n_layers") else ""
    if counts.below_iou == n:
        why = f"all {n} candidates were below pred_iou_thresh {iou:g}"
    elif counts.below_stability == n:
        why = f"all {n} candidates were below stability_score_thresh {stab:g}{edge}"
    else:
        parts = [
            f"{k} {what}"
            for k, what in (
                (counts.below_iou, f"below pred_iou_thresh {iou:g}"),
                (counts.below_stability, f"below stability_score_thresh {stab:g}{edge}"),
                (counts.duplicates, "removed as duplicates or small regions"),
            )
            if k
        ]
        why = f"of {n} candidates, " + ", ".join(parts)
    return f" No mask was kept: {why}. Lower the threshold to keep more; the masks you had are unchanged."
