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
        raise WorkbenchError("Segment everything needs SAM; the classical backend (GrabCut) "
                             "cannot do it. Start the app with SAM weights.")
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
    records, note = None, ""
    try:
        for update in generate(ctx.segmenter, image, p, cancel, ctx.model_lock):
            if update.final:
                records = update.records
                break
            with s.lock:
                if s.doc is not doc:  # another image was opened meanwhile
                    return
                s.preview.extend(r["segmentation"] for r in update.records)
                pr = update.progress
                eta = f", about {pr.eta_s:.0f} s left" if pr.eta_s is not None else ""
                view = make_view(ctx, s, f"Segment everything: batch {pr.done} of {pr.total}, "
                                         f"{len(s.preview)} candidate masks so far{eta}.")
            yield AmgStep(view, pr.done, pr.total, pr.eta_s, False)
    except Cancelled as e:
        records = e.records
        note = f" Cancelled after {e.done} of {e.total} batches; kept what was found."
    finally:
        with s.lock:
            s.preview = []
    with s.lock:
        if s.doc is not doc:
            return
        last = AmgStep(make_view(ctx, s, _add_records(ctx, s, records or [], note, t0)), 1, 1, 0.0, True)
    yield last


def _add_records(ctx: Context, s: Session, records: list, note: str, t0: float) -> str:
    records, capped = memory.fit_mask_cap(ctx.limits, s, records)
    extra = sum(len(r["segmentation"]["counts"]) for r in records)
    try:
        dropped = memory.make_room(ctx.limits, s, extra, "add these masks")
    except WorkbenchError as e:
        return f"Segment everything found {plural(len(records), 'mask')} but kept none: {e}"
    action = f"segment everything: {plural(len(records), 'mask')}"
    ids = s.doc.add_many(records, source="auto", action=action) if records else []
    secs = time.perf_counter() - t0
    return (f"Segment everything found {plural(len(ids), 'mask')} in {secs:.1f} s.{note}{capped}"
            f"{dropped} Filter and sort them in the Masks tab; review with J (next), Y (accept), "
            "X (reject).")
