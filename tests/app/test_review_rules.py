"""Review decisions outrank scores and bulk actions (issue 12, items 3 and 6-9): an accepted
mask is never deleted by a bulk action; a re-run of segment everything replaces only what
nobody reviewed; hidden masks are not drawn; subtract and merge follow the selection order."""

import numpy as np
from conftest import IMAGES
from pycocotools import mask as mask_utils

from annotator.amg.generator import Progress, Update
from annotator.annotations import rle as rle_utils
from annotator.annotations.document import AnnotationDocument
from annotator.annotations.render import overlay
from annotator.app import everything as everything_module
from annotator.app.workbench import TABLE_HEADERS, Workbench
from annotator.limits import Limits

DOG = IMAGES / "dog.jpg"
SMALL_GRID = {"points_per_side": 4, "points_per_batch": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def with_rects(wb, sid, *boxes, **fields):
    wb.open_image(sid, DOG)
    doc = wb.session(sid).doc
    h, w = doc.size
    return [doc.add(rect(h, w, *b), **fields) for b in boxes]


def col(rows, name):
    k = TABLE_HEADERS.index(name)
    return [r[k] for r in rows]


def with_duplicates(wb, sid):
    """Two groups of near-duplicates: (a, b, c) with b best, (d, e) with d best; f alone."""
    ids = with_rects(
        wb,
        sid,
        (100, 100, 200, 200),
        (101, 100, 200, 200),
        (100, 101, 200, 201),
        (400, 300, 500, 400),
        (402, 300, 500, 400),
        (600, 50, 700, 150),
        source="auto",
    )
    doc = wb.session(sid).doc
    for i, score in zip(ids, (0.90, 0.95, 0.80, 0.70, 0.60, 0.99)):
        doc.update(i, predicted_iou=score)
    return ids


def accepted(doc):
    return sorted(a.id for a in doc.annotations if a.review == "accepted")


# -- item 3: bulk actions never delete an accepted mask ----------------------------------------
def test_keep_best_keeps_the_accepted_mask_of_a_group_not_the_best_scored(wb, sid):
    a, b, _c, d, _e, f = with_duplicates(wb, sid)
    doc = wb.session(sid).doc
    doc.accept([a])  # a person accepted a, though b scores higher
    wb.find_duplicates(sid, 0.9)
    v = wb.resolve_duplicates(sid, "keep_best")
    assert accepted(doc) == [a]
    assert sorted(doc.ids) == sorted([a, d, f])  # b, c (pending) and e deleted
    assert f"kept accepted mask {a} instead of the best, mask {b}" in v.message
    assert "deleted 3 masks" in v.message


def test_merge_each_group_skips_a_group_holding_an_accepted_mask_and_says_so(wb, sid):
    a, b, c, d, e, _f = with_duplicates(wb, sid)
    doc = wb.session(sid).doc
    doc.accept([e])
    wb.find_duplicates(sid, 0.9)
    v = wb.resolve_duplicates(sid, "merge")
    assert d in doc and e in doc and doc[e].review == "accepted"  # group 2 left as it was
    assert a not in doc and b not in doc and c not in doc  # group 1 merged
    assert "Merged 1 group" in v.message
    assert f"Skipped group 2 (holds accepted mask {e})" in v.message
    assert wb.duplicate_rows(sid) == [[1, d, f"{e}", 2]]  # still listed, to look at


def fake_run(records_of_run):
    """A stand-in for SAM's generator returning the next list of records on each run."""
    runs = iter(records_of_run)

    def fake_generate(segmenter, image, params, cancel, model_lock=None):
        yield Update(next(runs), True, Progress(1, 1, 0.0, 0.0, 0, 1))

    return fake_generate


def square_records(size_hw, n, iou, offset=0):
    h, w = size_hw
    out = []
    for k in range(n):
        m = rect(h, w, 20 * (k + offset), 0, 20 * (k + offset) + 20, 20)
        out.append(
            {
                "segmentation": mask_utils.encode(np.asfortranarray(m.astype(np.uint8))),
                "predicted_iou": iou,
                "stability_score": 0.9,
            }
        )
    return out


def test_the_mask_cap_never_drops_an_accepted_mask_and_counts_replaced_ones_as_room(tiny_checkpoint, sid, monkeypatch):
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    wb = Workbench(segmenter, info, limits=Limits(max_masks=5))
    wb.open_image(sid, DOG)
    size = wb.session(sid).doc.size
    monkeypatch.setattr(
        everything_module, "generate", fake_run([square_records(size, 5, 0.9), square_records(size, 8, 0.8, offset=10)])
    )
    list(wb.segment_everything(sid, points_per_side=4))
    doc = wb.session(sid).doc
    first = list(doc.ids)
    doc.accept(first[:2])
    *_, last = wb.segment_everything(sid, points_per_side=4)
    assert accepted(doc) == first[:2]  # both accepted masks are still there
    assert len(doc) == 5  # 3 pending ones replaced by the 3 best new ones
    assert "Kept the 3 best of 8" in last.view.message
    assert "Replaced the previous run's 3 pending masks; kept its reviewed ones (2 accepted)" in last.view.message


# -- item 7: segment everything run twice ------------------------------------------------------
def test_a_rerun_replaces_the_pending_masks_of_the_previous_run_and_keeps_reviewed_ones(wb, sid, monkeypatch):
    wb.open_image(sid, DOG)
    wb.click(sid, 300, 300)
    wb.accept(sid, "dog")  # a prompted mask: never part of a run
    size = wb.session(sid).doc.size
    n = 6
    monkeypatch.setattr(
        everything_module, "generate", fake_run([square_records(size, n, 0.9), square_records(size, n, 0.9)])
    )
    list(wb.segment_everything(sid, **SMALL_GRID))
    doc = wb.session(sid).doc
    auto = [a.id for a in doc.annotations if a.source == "auto"]
    assert len(auto) == n
    doc.accept([auto[0]])
    doc.reject([auto[1]])
    doc.relabel([auto[2]], "bowl")
    *_, last = wb.segment_everything(sid, **SMALL_GRID)
    assert len(doc) == 1 + 3 + n  # the prompted mask, the 3 reviewed or labelled, the new run
    assert all(i in doc for i in auto[:3]) and not any(i in doc for i in auto[3:])
    assert doc[auto[0]].review == "accepted" and doc[auto[1]].review == "rejected"
    assert (
        f"Replaced the previous run's {n - 3} pending masks; kept its reviewed ones "
        "(1 accepted, 1 rejected, 1 labelled)"
    ) in last.view.message
    wb.undo(sid)  # one step: the previous run is back
    assert sorted(a.id for a in doc.annotations if a.source == "auto") == sorted(auto)


def test_a_run_that_keeps_nothing_names_the_threshold_and_keeps_the_previous_masks(wb, sid):
    wb.open_image(sid, DOG)
    list(wb.segment_everything(sid, **SMALL_GRID))
    doc = wb.session(sid).doc
    before = list(doc.ids)
    *_, last = wb.segment_everything(sid, **dict(SMALL_GRID, pred_iou_thresh=0.999))
    # 4 x 4 points, three candidates each; the random model predicts no IoU near 0.999
    assert "found 0 masks" in last.view.message
    assert "all 48 candidates were below pred_iou_thresh 0.999" in last.view.message
    assert list(doc.ids) == before
    *_, last = wb.segment_everything(sid, **dict(SMALL_GRID, stability_score_thresh=1.0))
    msg = last.view.message
    if "found 0 masks" in msg:  # (a mask with no logit near the threshold is perfectly stable)
        assert "all 48 candidates were below stability_score_thresh 1" in msg


def test_filter_counts_add_up_to_the_candidates(wb, sid):
    from annotator.amg.generator import MaskGenerator

    wb.open_image(sid, DOG)
    gen = MaskGenerator(
        wb.segmenter, output_mode="coco_rle", points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.5
    )
    *_, final = gen.iter_generate(wb.session(sid).image)
    c = final.counts
    assert c.candidates == 48 and c.kept == len(final.records)
    assert min(c.below_iou, c.below_stability, c.duplicates, c.kept) >= 0


# -- item 6: hide ------------------------------------------------------------------------------
def test_hidden_mask_is_not_drawn_only_a_dashed_outline_while_selected(wb, sid):
    wb.open_image(sid, DOG)
    photo = wb.canvas(sid).copy()
    (a,) = with_rects(wb, sid, (100, 100, 300, 300))
    s = wb.session(sid)
    x0, x1 = (round(v * s.scale) for v in (100, 300))  # display pixels
    inner = (slice(x0 + 3, x1 - 3), slice(x0 + 3, x1 - 3))
    wb.select_mask(sid, a)
    assert not np.array_equal(wb.canvas(sid)[inner], photo[inner])
    v = wb.toggle_visibility(sid)
    hidden = wb.canvas(sid)
    assert np.array_equal(hidden[inner], photo[inner])  # the photo shows again under it
    edge = hidden[x0:x1, x0]  # its left edge: a dashed outline, some pixels drawn, some not
    drawn = (edge != photo[x0:x1, x0]).any(axis=1)
    assert 0.2 < drawn.mean() < 0.8
    assert col(v.table, "")[col(v.table, "id").index(a)] == "● hidden"
    wb.clear_selection(sid)
    assert np.array_equal(wb.canvas(sid), photo)  # not selected: nothing of it is drawn
    wb.select_mask(sid, a)
    wb.toggle_visibility(sid)
    assert not np.array_equal(wb.canvas(sid)[inner], photo[inner])  # shown again


def test_overlay_leaves_hidden_masks_out_even_when_selected():
    image = np.full((40, 40, 3), 100, np.uint8)
    m = rect(40, 40, 10, 10, 30, 30)
    rles = [rle_utils.encode(m)]
    out = overlay(image, rles, selected=[0], hidden=[0])
    assert np.array_equal(out[12:28, 12:28], image[12:28, 12:28])
    assert (out[10, 10:30] == 255).all(axis=1).any() and not (out[10, 10:30] == 255).all()
    assert np.array_equal(overlay(image, rles, hidden=[0]), image)
    assert np.array_equal(overlay(image, m[None], selected=[0], hidden=[0]), out)  # dense input too


# -- item 8: subtract --------------------------------------------------------------------------
def test_subtract_cuts_the_later_selected_masks_out_of_the_first_selected_one(wb, sid):
    small, big = with_rects(wb, sid, (100, 100, 200, 200), (150, 150, 400, 400))
    doc = wb.session(sid).doc
    wb.select_mask(sid, small)  # first: the target, although it is the smaller one
    wb.select_mask(sid, big)
    v = wb.subtract(sid)
    assert doc[small].area == 100 * 100 - 50 * 50 and doc[big].area == 250 * 250
    assert f"Cut mask {big} out of mask {small} (the first selected)" in v.message
    wb.undo(sid)  # the selection of the result
    wb.undo(sid)  # the cut
    assert doc[small].area == 100 * 100
    wb.clear_selection(sid)
    wb.click(sid, 300, 300, "select")  # the other way round, by clicking
    wb.click(sid, 120, 120, "select")
    wb.subtract(sid)
    assert doc[big].area == 250 * 250 - 50 * 50 and doc[small].area == 100 * 100


def test_the_subtract_button_says_what_it_cuts_from(tiny_checkpoint, tmp_path):
    from annotator.app.ui import build_app
    from annotator.models.loading import load_segmenter

    demo = build_app(*load_segmenter("tiny", str(tiny_checkpoint), device="cpu"), projects_dir=tmp_path)
    (button,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "subtract"]
    assert button.value == "Subtract from 1st selected"


# -- item 9: merge keeps the first-selected label -----------------------------------------------
def test_merge_keeps_the_first_selected_label_and_names_the_dropped_ones(wb, sid):
    a, b, c = with_rects(wb, sid, (0, 0, 100, 100), (50, 50, 150, 150), (200, 200, 250, 250))
    doc = wb.session(sid).doc
    for i, label in ((a, "cat"), (b, "dog"), (c, "dog")):
        doc.relabel([i], label)
    for i in (a, c, b):  # a first; b is topmost in the z-order
        wb.select_mask(sid, i)
    v = wb.merge(sid)
    (m,) = doc.selected()
    assert doc[m].label == "cat"
    assert "labelled 'cat' (the first selected); dropped the label 'dog'" in v.message
    wb.undo(sid)
    wb.clear_selection(sid)
    wb.select_mask(sid, b)
    wb.select_mask(sid, a)
    wb.merge(sid)
    assert doc[doc.selected()[0]].label == "dog"


def test_selection_order_survives_deletes_and_undo():
    doc = AnnotationDocument(10, 10)
    ids = doc.add_many([rect(10, 10, k, 0, k + 1, 1) for k in range(4)])
    doc.select([ids[2]])
    doc.select([ids[0]], "add")
    doc.select([ids[3], ids[1]], "add")
    assert doc.selected_in_order() == [ids[2], ids[0], ids[3], ids[1]]
    doc.delete([ids[0]])
    assert doc.selected_in_order() == [ids[2], ids[3], ids[1]]
    doc.undo()
    assert doc.selected_in_order() == [ids[2], ids[0], ids[3], ids[1]]
    doc.select([ids[2]], "toggle")
    assert doc.selected_in_order() == [ids[0], ids[3], ids[1]]
