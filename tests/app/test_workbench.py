"""The app's logic without a browser: every UI action is a Workbench method on a session."""

import json
import uuid

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from annotator.annotations import render
from annotator.app.workbench import TABLE_HEADERS, Workbench, WorkbenchError
from annotator.models.grabcut import GrabCutSegmenter
from annotator.models.loading import BackendInfo, load_segmenter

DOG = IMAGES / "dog.jpg"


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def with_rects(wb, sid, *boxes, **fields):
    """Open dog.jpg and add rectangle masks (x0, y0, x1, y1) with known geometry."""
    wb.open_image(sid, DOG)
    doc = wb.session(sid).doc
    h, w = doc.size
    return [doc.add(rect(h, w, *b), **fields) for b in boxes]


def col(rows, name):
    k = TABLE_HEADERS.index(name)
    return [r[k] for r in rows]


# -- image in ------------------------------------------------------------------------------
def test_open_image_shows_it_with_status_and_an_empty_table(wb, sid, dog):
    v = wb.open_image(sid, DOG)
    assert v.canvas.shape == dog.shape and np.array_equal(v.canvas, dog)
    assert "SAM tiny" in v.status and "dog.jpg 800x534" in v.status and "embedding cached" in v.status
    assert v.table == [] and v.candidates == []


def test_masks_of_earlier_images_are_never_forgotten_by_count(wb, sid):
    from annotator.app.workbench import MAX_DOCUMENTS

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(MAX_DOCUMENTS + 4)]
    for k, image in enumerate(images):
        wb.load(sid, image, name=f"img{k}.png")
        if k < 3:  # the first three get a mask; the rest stay empty
            wb.session(sid).doc.add(rect(24, 32, 2, 2, 10 + k, 10), label=f"m{k}")
    assert len(wb.session(sid).documents) <= MAX_DOCUMENTS + 1
    for k in range(3):
        v = wb.load(sid, images[k], name=f"img{k}.png")
        assert "1 mask from before is back" in v.message
        assert [a.label for a in wb.session(sid).doc.annotations] == [f"m{k}"]


def test_reopening_an_image_reuses_the_cached_embedding(wb, sid):
    wb.open_image(sid, DOG)
    v = wb.open_image(uuid.uuid4().hex, DOG)
    assert "from the cache" in v.message


def test_opening_an_image_prepares_the_decoder_for_the_first_click(wb, sid, monkeypatch):
    prepared = []
    real = wb.ctx.segmenter.prepare
    monkeypatch.setattr(wb.ctx.segmenter, "prepare", lambda emb: prepared.append(emb) or real(emb))
    wb.open_image(sid, DOG)
    assert prepared == [wb.session(sid).embedding]


def test_reopening_an_image_brings_its_masks_back(wb, sid):
    (a,) = with_rects(wb, sid, (0, 0, 50, 50))
    wb.open_image(sid, IMAGES / "truck.jpg")
    assert len(wb.session(sid).doc) == 0
    v = wb.load(sid, DOG)
    assert wb.session(sid).doc.ids == (a,) and col(v.table, "id") == [a]
    assert "Its 1 mask from before is back" in v.message


def test_unreadable_upload_is_a_clear_error_and_keeps_the_session(wb, sid, tmp_path):
    wb.open_image(sid, DOG)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(WorkbenchError, match="not an image"):
        wb.open_image(sid, bad)
    assert wb.session(sid).name == "dog.jpg"


def test_actions_before_an_image_say_to_upload_first(wb, sid):
    with pytest.raises(WorkbenchError, match="Upload an image first"):
        wb.click(sid, 10, 10)
    with pytest.raises(WorkbenchError, match="Upload an image first"):
        wb.merge(sid)


def test_large_image_is_shown_downscaled_and_clicks_map_to_original_pixels(tiny_checkpoint, sid):
    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    wb = Workbench(segmenter, info, max_display_side=400)
    image = np.asarray(Image.open(DOG).convert("RGB"))  # 800x534 shown at 400x267
    v = wb.open_image(sid, image, "dog.jpg")
    assert v.canvas.shape == (267, 400, 3)
    wb.click_display(sid, 150, 100)
    ((x, y),) = wb.session(sid).prompt.points
    assert x == pytest.approx(300.5, abs=0.01) and y == pytest.approx(200.5, abs=0.01)
    assert wb.session(sid).prompt.mask.shape == (534, 800)  # masks stay in original pixels
    wb.accept(sid, "dog")
    assert wb.session(sid).doc.size == (534, 800)


# -- prompting -----------------------------------------------------------------------------
def test_point_offers_three_candidates_drawn_on_the_canvas(wb, sid, dog):
    wb.open_image(sid, DOG)
    v = wb.click(sid, 300, 300)
    assert len(v.candidates) == 3 and v.candidate is not None
    assert all("IoU" in label and "px" in label for label, _ in v.candidates)
    mask = wb.session(sid).prompt.mask
    changed = np.any(v.canvas != dog, axis=2)
    assert changed[mask].mean() > 0.95  # the candidate mask is tinted
    assert v.canvas[300, 300].tolist() != dog[300, 300].tolist()


def test_same_pixel_cycles_and_a_candidate_can_be_chosen(wb, sid):
    wb.open_image(sid, DOG)
    first = wb.click(sid, 300, 300).candidate
    second = wb.click(sid, 301, 300).candidate
    assert second == (first + 1) % 3
    v = wb.choose_candidate(sid, 2)
    assert v.candidate == 2
    with pytest.raises(WorkbenchError):
        wb.choose_candidate(sid, 5)


def test_two_click_box_and_points_combine(wb, sid):
    wb.open_image(sid, DOG)
    v = wb.click(sid, 480, 130, "box")
    assert "first corner" in v.message and v.candidates == []
    v = wb.click(sid, 670, 270, "box")
    assert wb.session(sid).prompt.box == (480.0, 130.0, 670.0, 270.0)
    assert len(v.candidates) == 1
    v = wb.click(sid, 575, 200, "positive")
    p = wb.session(sid).prompt
    assert p.box is not None and len(p.points) == 1 and len(v.candidates) == 1


def test_accept_adds_the_mask_with_label_and_score(wb, sid):
    wb.open_image(sid, DOG)
    with pytest.raises(WorkbenchError, match="Nothing to accept"):
        wb.accept(sid, "dog")
    wb.click(sid, 300, 300)
    p = wb.session(sid).prompt
    mask, score = p.mask.copy(), p.score
    v = wb.accept(sid, "  dog ")
    doc = wb.session(sid).doc
    (a,) = doc.annotations
    assert np.array_equal(a.mask(), mask)
    assert a.label == "dog" and a.source == "prompt" and a.review == "accepted"
    assert a.predicted_iou == pytest.approx(score)
    assert a.prompts["points"] == [[300.0, 300.0]]
    assert wb.session(sid).prompt.empty and v.candidates == []
    assert col(v.table, "id") == [a.id] and col(v.table, "label") == ["dog"]


def test_undo_removes_the_last_prompt_point_before_touching_the_document(wb, sid):
    wb.open_image(sid, DOG)
    wb.click(sid, 300, 300)
    wb.accept(sid, "dog")
    wb.click(sid, 100, 100)
    wb.click(sid, 150, 120, "negative")
    v = wb.undo(sid)
    assert "prompt point" in v.message and len(wb.session(sid).prompt.points) == 1
    wb.clear_prompt(sid)
    v = wb.undo(sid)
    assert "add mask" in v.message and len(wb.session(sid).doc) == 0
    v = wb.redo(sid)
    assert len(wb.session(sid).doc) == 1


def test_unchanged_canvas_and_table_are_not_resent(wb, sid):
    wb.open_image(sid, DOG)
    v = wb.set_mode(sid, "positive")
    assert v.canvas is None and v.table is None  # nothing changed since the last view
    v = wb.click(sid, 300, 300)
    assert v.canvas is not None and v.table is None  # prompt changed, document did not
    v = wb.accept(sid, "dog")
    assert v.canvas is not None and v.table is not None
    assert wb.resend(sid).canvas is not None


# -- selecting and editing -----------------------------------------------------------------
def test_select_mode_toggles_and_cycles_nested_masks(wb, sid):
    outer, inner = with_rects(wb, sid, (100, 100, 400, 400), (200, 200, 300, 300))
    doc = wb.session(sid).doc
    wb.click(sid, 250, 250, "select")
    assert doc.selection == {inner}  # the topmost mask under the cursor
    v = wb.click(sid, 250, 250, "select")
    assert doc.selection == {outer} and "2 of 2" in v.message  # same pixel: the one beneath
    wb.click(sid, 251, 250, "select")
    assert doc.selection == {inner}  # and around again
    wb.click(sid, 120, 120, "select")  # elsewhere: toggles the outer one in
    assert doc.selection == {inner, outer}
    wb.click(sid, 120, 120 + 50, "select")
    assert doc.selection == {inner}
    assert wb.click(sid, 600, 50, "select").message == "No mask here."


def test_selected_masks_are_highlighted_and_marked_in_the_table(wb, sid):
    a, b = with_rects(wb, sid, (50, 50, 150, 150), (300, 300, 400, 400))
    before = wb.canvas(sid).copy()
    v = wb.select_mask(sid, b)
    assert col(v.table, "")[col(v.table, "id").index(b)] == "●"
    after = wb.canvas(sid)
    assert np.array_equal(after[100, 100], before[100, 100])  # mask a unchanged
    assert not np.array_equal(after[350, 350], before[350, 350])  # mask b highlighted


def test_merge_subtract_delete_hide_relabel_and_undo(wb, sid):
    a, b, c = with_rects(wb, sid, (0, 0, 200, 200), (100, 100, 300, 300), (150, 150, 180, 180))
    doc = wb.session(sid).doc
    with pytest.raises(WorkbenchError, match="at least two"):
        wb.merge(sid)
    wb.select_mask(sid, a)
    wb.select_mask(sid, b)
    v = wb.merge(sid)
    (m,) = doc.selected()
    assert doc[m].area == 200 * 200 * 2 - 100 * 100 and f"into mask {m}" in v.message
    assert sorted(doc.ids) == sorted([c, m])
    wb.select_mask(sid, c)
    wb.subtract(sid)  # c (selected second) cut out of m (selected first)
    assert doc[m].area == 200 * 200 * 2 - 100 * 100 - 30 * 30
    wb.clear_selection(sid)
    wb.select_mask(sid, c)
    v = wb.toggle_visibility(sid)
    assert not doc[c].visible and col(v.table, "")[col(v.table, "id").index(c)] == "● hidden"
    wb.relabel(sid, "hole")
    assert doc[c].label == "hole"
    wb.delete(sid)
    assert c not in doc
    wb.undo(sid)
    assert c in doc and doc[c].label == "hole"


# -- filters, view options, review -----------------------------------------------------------
def test_filter_and_sort_without_changing_the_document(wb, sid):
    ids = with_rects(wb, sid, (0, 0, 10, 10), (0, 0, 100, 100), (0, 0, 50, 50), source="auto")
    doc = wb.session(sid).doc
    # the two scores rank the masks in opposite orders, so reading one for the other shows
    for i, iou, stability in zip(ids, (0.9, 0.5, 0.7), (0.6, 0.99, 0.8), strict=True):
        doc.update(i, predicted_iou=iou, stability_score=stability)
    v = wb.set_filter(sid, min_area=200, sort_by="area", descending=True)
    assert col(v.table, "id") == [ids[1], ids[2]] and "2 of 3" in v.message
    v = wb.set_filter(sid, min_iou=0.6, sort_by="predicted_iou")
    assert col(v.table, "id") == [ids[2], ids[0]]
    v = wb.set_filter(sid, min_stability=0.75, sort_by="stability_score")
    assert col(v.table, "id") == [ids[2], ids[1]] and "2 of 3" in v.message
    v = wb.set_filter(sid, sort_by="stability_score", descending=True)
    assert col(v.table, "id") == [ids[1], ids[2], ids[0]]
    assert col(v.table, "stab.") == ["0.990", "0.800", "0.600"] and col(v.table, "IoU") == ["0.500", "0.700", "0.900"]
    v = wb.set_filter(sid, min_iou=0.6, min_stability=0.75)
    assert col(v.table, "id") == [ids[2]]
    assert len(doc) == 3
    # filtered-out masks are neither drawn nor pickable
    assert wb.click(sid, 60, 60, "select").message == "No mask here."


def test_review_filter_shows_masks_by_decision(wb, sid):
    ids = with_rects(wb, sid, (0, 0, 10, 10), (20, 20, 40, 40), (50, 50, 60, 60), (70, 70, 80, 80), source="auto")
    doc = wb.session(sid).doc
    doc.update(ids[0], review="accepted")
    doc.update(ids[1], review="rejected")
    shown = {
        review: col(wb.set_filter(sid, review=review).table, "id")
        for review in ("all", "pending", "accepted", "rejected")
    }
    assert shown == {"all": ids, "pending": ids[2:], "accepted": ids[:1], "rejected": ids[1:2]}
    assert "2 of 4" in wb.set_filter(sid, review="pending").message
    with pytest.raises(WorkbenchError, match="review filter must be one of"):
        wb.set_filter(sid, review="maybe")


def test_review_walks_pending_masks_in_table_order(wb, sid):
    ids = with_rects(wb, sid, (0, 0, 10, 10), (20, 20, 40, 40), (50, 50, 60, 60), source="auto")
    doc = wb.session(sid).doc
    with pytest.raises(WorkbenchError, match="Nothing to review"):
        wb.review(sid, "accepted")
    v = wb.step(sid, 1)
    assert wb.session(sid).cursor == ids[0] and col(v.table, "")[0] == "▶"
    wb.review(sid, "accepted")
    assert doc[ids[0]].review == "accepted" and wb.session(sid).cursor == ids[1]
    wb.review(sid, "rejected")
    assert doc[ids[1]].review == "rejected" and wb.session(sid).cursor == ids[2]
    v = wb.review(sid, "accepted")
    assert wb.session(sid).cursor is None and "No pending" in v.message
    wb.step(sid, -1)
    assert wb.session(sid).cursor == ids[2]


def test_view_options_and_coverage_map(wb, sid, dog):
    with_rects(wb, sid, (0, 0, 400, 534), review="accepted")
    v = wb.set_view(sid, coverage=True)
    assert "50.0%" in v.message
    c = v.canvas
    assert np.array_equal(c[:, :400], dog[:, :400])  # covered: the photo as it is
    assert (np.abs(c[:, 400:].astype(int) - dog[:, 400:]).sum(2) > 0).mean() > 0.99
    wb.set_view(sid, coverage=False, alpha=0.0, outlines=False)
    assert np.array_equal(wb.canvas(sid), dog)
    with pytest.raises(WorkbenchError):
        wb.set_view(sid, alpha=1.5)


def test_only_selected_hides_the_other_masks(wb, sid, dog):
    a, b = with_rects(wb, sid, (0, 0, 100, 100), (200, 200, 300, 300))
    wb.select_mask(sid, b)
    wb.set_view(sid, only_selected=True)
    c = wb.canvas(sid)
    assert np.array_equal(c[50, 50], dog[50, 50]) and not np.array_equal(c[250, 250], dog[250, 250])


# -- export and import -----------------------------------------------------------------------
def test_export_categories_are_the_class_list_with_ids_that_stay(wb, sid, tmp_path):
    person, car = with_rects(wb, sid, (0, 0, 100, 100), (200, 200, 300, 350))
    for ann_id, label in ((person, "person"), (car, "car")):
        wb.select_mask(sid, ann_id, "replace")
        wb.relabel(sid, label)  # a new name adds a class: person 1, car 2
    first = COCO(str(wb.export(sid, figures=False, out_dir=tmp_path / "a").coco))
    wb.select_mask(sid, person, "replace")
    wb.delete(sid)
    second = COCO(str(wb.export(sid, figures=False, out_dir=tmp_path / "b").coco))
    for coco in (first, second):
        assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(1, "person"), (2, "car")]
    (ann,) = second.loadAnns(second.getAnnIds())
    assert ann["category_id"] == 2  # car keeps its id with the person mask gone


def test_export_writes_coco_that_pycocotools_loads_and_leaves_out_rejected(wb, sid, tmp_path):
    ids = with_rects(wb, sid, (0, 0, 100, 100), (200, 200, 300, 350), (400, 100, 500, 200))
    doc = wb.session(sid).doc
    doc.relabel([ids[0]], "dog")
    doc.accept([ids[0]])
    doc.reject([ids[2]])
    out = wb.export(sid, figures=False, out_dir=tmp_path)
    names = {f.name for f in out.files}
    assert {"dog_coco.json", "dog_instances.png", "dog_classes.png", "dog_overlay.png"} <= names
    coco = COCO(str(out.coco))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 2
    for ann in anns:
        m = coco.annToMask(ann).astype(bool)
        assert np.array_equal(m, doc[ann["annotator_id"]].mask())
    assert {coco.cats[a["category_id"]]["name"] for a in anns} == {"dog", "object"}
    instances = np.asarray(Image.open(tmp_path / "dog_instances.png"))
    assert instances[50, 50] == ids[0] and instances[250, 250] == ids[1] and instances[150, 450] == 0
    only = wb.export(sid, include_pending=False, figures=False, out_dir=tmp_path / "accepted")
    assert len(json.loads(only.coco.read_text())["annotations"]) == 1


def test_export_polygons_and_figures(wb, sid, tmp_path):
    with_rects(wb, sid, (10, 10, 110, 60), (200, 200, 300, 300), review="accepted")
    out = wb.export(sid, "polygon", out_dir=tmp_path)
    data = json.loads(out.coco.read_text())
    seg = data["annotations"][0]["segmentation"]
    assert isinstance(seg, list)
    rle = mask_utils.merge(mask_utils.frPyObjects(seg, 534, 800))
    assert mask_utils.area(rle) == 100 * 50
    assert {"dog_masks.png", "dog_sizes.png", "dog_containment.png"} <= {f.name for f in out.files}


def test_export_with_nothing_to_export_says_so(wb, sid):
    wb.open_image(sid, DOG)
    with pytest.raises(WorkbenchError, match="Nothing to export"):
        wb.export(sid)


def test_import_round_trip_and_mismatched_image(wb, sid, tmp_path):
    with_rects(wb, sid, (10, 10, 110, 60), (200, 200, 300, 300), review="accepted")
    wb.session(sid).doc.relabel(None, None)
    out = wb.export(sid, figures=False, out_dir=tmp_path)
    other = uuid.uuid4().hex
    wb.open_image(other, DOG)
    v = wb.import_annotations(other, out.coco)
    a, b = wb.session(other).doc.annotations
    assert "Imported 2 masks" in v.message and a.source == "import" and a.review == "accepted"
    assert a.area == 100 * 50 and b.area == 100 * 100
    wb.open_image(other, IMAGES / "truck.jpg")
    with pytest.raises(WorkbenchError, match="800x534"):
        wb.import_annotations(other, out.coco)
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(WorkbenchError, match="not valid JSON"):
        wb.import_annotations(other, broken)


def test_import_sam_amg_output(wb, sid, tmp_path):
    wb.open_image(sid, DOG)
    m = rect(534, 800, 10, 20, 60, 90)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    record = {
        "segmentation": {"size": [534, 800], "counts": rle["counts"].decode()},
        "area": int(m.sum()),
        "bbox": [10, 20, 50, 70],
        "predicted_iou": 0.93,
        "point_coords": [[30, 50]],
        "stability_score": 0.97,
        "crop_box": [0, 0, 800, 534],
    }
    path = tmp_path / "dog.json"  # amg.py names it after the image
    path.write_text(json.dumps([record]))
    wb.import_annotations(sid, path)
    (a,) = wb.session(sid).doc.annotations
    assert a.predicted_iou == pytest.approx(0.93) and a.stability_score == pytest.approx(0.97)
    assert a.review == "pending" and np.array_equal(a.mask(), m)


# -- sessions and backends -------------------------------------------------------------------
def test_sessions_are_isolated_and_freed(wb):
    one, two = uuid.uuid4().hex, uuid.uuid4().hex
    with_rects(wb, one, (0, 0, 50, 50), review="accepted")
    wb.open_image(two, DOG)
    assert len(wb.session(one).doc) == 1 and len(wb.session(two).doc) == 0
    folder = wb.export(one, figures=False).coco.parent
    assert folder.is_dir()
    wb.free(one)
    assert one not in wb.sessions and not folder.exists()
    assert two in wb.sessions


def test_only_recent_exports_stay_on_disk(wb, sid):
    from annotator.app.workbench import KEEP_EXPORTS

    with_rects(wb, sid, (0, 0, 50, 50), review="accepted")
    folders = [wb.export(sid, figures=False).coco.parent for _ in range(KEEP_EXPORTS + 1)]
    assert not folders[0].exists() and all(f.is_dir() for f in folders[1:])
    assert all(f.parent == wb.export_root for f in folders)


def test_classical_backend_says_it_is_not_sam(sid):
    info = BackendInfo("classical", None, None, "cpu", "n/a", reason="no SAM weights (offline)")
    wb = Workbench(GrabCutSegmenter(), info)
    v = wb.open_image(sid, DOG)
    assert "NOT SAM" in v.status
    wb.click(sid, 480, 130, "box")
    v = wb.click(sid, 670, 270, "box")
    assert v.candidates == [("1: no score · " + f"{int(wb.session(sid).prompt.mask.sum()):,} px", 0)]
    assert "no score" in v.message
    wb.accept(sid, "bowl")
    assert wb.session(sid).doc.annotations[0].predicted_iou is None


# -- segment everything ------------------------------------------------------------------------
SMALL_GRID = dict(points_per_side=4, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def test_segment_everything_streams_batches_then_adds_one_undoable_step(wb, sid):
    wb.open_image(sid, DOG)
    wb.click(sid, 300, 300)
    wb.accept(sid, "dog")
    before = wb.canvas(sid)
    steps, drawn = [], []
    for step in wb.segment_everything(sid, **SMALL_GRID):
        steps.append(step)
        if not step.final:  # what the canvas should show now: every candidate found so far
            drawn.append(render.label_map_from_rles(wb.session(sid).preview, before.shape[:2]) != 0)
    *batches, final = steps
    assert [s.done for s in batches] == [1, 2, 3, 4] and all(s.total == 4 for s in batches)
    assert all(not s.final for s in batches)
    # masks appear batch by batch: each canvas differs from the one before, and only where
    # the run's candidates are (the photo at scale 1, so canvas and image pixels agree)
    previous = before
    for step, where in zip(batches, drawn):
        changed = np.any(step.view.canvas != previous, axis=2)
        assert changed.any() and where[changed].mean() > 0.95
        previous = step.view.canvas
    assert "candidate masks so far" in batches[0].view.message
    assert batches[-1].eta_s == pytest.approx(0.0, abs=1e-6) and batches[0].eta_s > 0
    assert final.final and "Segment everything found" in final.view.message
    doc = wb.session(sid).doc
    auto = [a for a in doc.annotations if a.source == "auto"]
    assert auto and all(
        a.review == "pending" and a.predicted_iou is not None and a.stability_score is not None and a.point_coords
        for a in auto
    )
    assert wb.session(sid).preview == []
    assert wb.session(sid).amg_params["points_per_side"] == 4
    wb.undo(sid)
    assert [a.label for a in doc.annotations] == ["dog"]  # one step undoes the whole run


def test_cancel_keeps_the_masks_found_so_far(wb, sid):
    wb.open_image(sid, DOG)
    run = wb.segment_everything(sid, **SMALL_GRID)
    first = next(run)
    assert first.done == 1
    text = lambda counts: counts.decode() if isinstance(counts, bytes) else counts  # noqa: E731
    found = {text(r["counts"]) for r in wb.session(sid).preview}  # the first batch's candidates
    wb.cancel(sid)
    (final,) = list(run)
    assert final.final and "Cancelled after 1 of 4 batches" in final.view.message
    kept = [text(a.rle["counts"]) for a in wb.session(sid).doc.annotations]
    # exactly what the first batch's 4 points find, deduplicated: nothing from a batch after
    # the cancel, no duplicate left in
    from segment_anything.utils.amg import build_all_layer_point_grids

    from annotator.amg.generator import MaskGenerator

    (grid,) = build_all_layer_point_grids(4, 0, 1)
    params = {k: v for k, v in SMALL_GRID.items() if k != "points_per_side"}
    first_batch = MaskGenerator(
        wb.segmenter, output_mode="coco_rle", points_per_side=None, point_grids=[grid[:4]], **params
    ).generate(wb.session(sid).image)
    assert kept and set(kept) <= found and len(set(kept)) == len(kept)
    assert sorted(kept) == sorted(text(r["segmentation"]["counts"]) for r in first_batch)


def test_other_sessions_click_between_the_batches_of_a_run(wb, sid):
    import threading

    other = uuid.uuid4().hex
    wb.open_image(sid, DOG)
    wb.open_image(other, DOG)
    run = wb.segment_everything(sid, **SMALL_GRID)
    assert next(run).done == 1
    # the run is paused between batches: it holds neither the model nor the session
    assert wb.model_lock.users_waiting() == 0
    answered = []
    t = threading.Thread(target=lambda: answered.append(wb.click(other, 300, 300)))
    t.start()
    t.join(timeout=60)
    assert answered and len(answered[0].candidates) == 3
    *rest, final = list(run)
    assert [s.done for s in rest] == [2, 3, 4] and final.final
    assert len(wb.session(other).doc) == 0  # the run's masks went to its own session only


def test_a_run_resumed_on_other_threads_never_leaves_the_session_locked(wb, sid):
    """Gradio runs each step of a generator on whichever worker thread is free, and a
    client may stop reading after the last step it needs."""
    from concurrent.futures import ThreadPoolExecutor

    wb.open_image(sid, DOG)
    run = wb.segment_everything(sid, **SMALL_GRID)
    steps = []
    for _ in range(5):  # 4 batches and the final step, each on a new thread
        with ThreadPoolExecutor(1) as pool:
            steps.append(pool.submit(next, run).result(timeout=60))
    assert steps[-1].final
    # the generator is not exhausted (nor closed), yet other threads get the session
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(wb.session(sid).lock.acquire, timeout=5).result()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(list, run).result(timeout=60) == []


def test_segment_everything_checks_its_parameters(wb, sid):
    wb.open_image(sid, DOG)
    with pytest.raises(WorkbenchError, match="points_per_side"):
        list(wb.segment_everything(sid, points_per_side=0))
    with pytest.raises(WorkbenchError, match="unknown"):
        list(wb.segment_everything(sid, points_per_sid=8))


def test_segment_everything_on_the_classical_backend_says_it_needs_sam(sid):
    info = BackendInfo("classical", None, None, "cpu", "n/a", reason="no SAM weights")
    wb = Workbench(GrabCutSegmenter(), info)
    wb.open_image(sid, DOG)
    with pytest.raises(WorkbenchError, match="needs SAM"):
        list(wb.segment_everything(sid, **SMALL_GRID))


# -- duplicates ------------------------------------------------------------------------------
def with_duplicates(wb, sid):
    """Two groups of near-duplicates (scores decide the best) and one lone mask."""
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


def test_find_duplicates_groups_them_best_first(wb, sid):
    a, b, c, d, e, f = with_duplicates(wb, sid)
    v = wb.find_duplicates(sid, 0.9)
    assert "2 groups" in v.message
    assert wb.duplicate_rows(sid) == [[1, b, f"{a}, {c}", 3], [2, d, f"{e}", 2]]
    v = wb.select_duplicates(sid, 2)
    assert wb.session(sid).doc.selection == {d, e}
    assert wb.duplicate_rows(sid)[1][1] == d  # selecting does not invalidate the groups
    with pytest.raises(WorkbenchError):
        wb.select_duplicates(sid, 3)


def test_keep_best_deletes_the_rest_in_one_undoable_step(wb, sid):
    a, b, c, d, e, f = with_duplicates(wb, sid)
    wb.find_duplicates(sid, 0.9)
    v = wb.resolve_duplicates(sid, "keep_best")
    doc = wb.session(sid).doc
    assert sorted(doc.ids) == sorted([b, d, f]) and "deleted 3 masks" in v.message
    assert wb.duplicate_rows(sid) == []
    wb.undo(sid)
    assert len(doc) == 6


def test_merge_each_group_into_its_union(wb, sid):
    a, b, c, d, e, f = with_duplicates(wb, sid)
    wb.find_duplicates(sid, 0.9)
    wb.resolve_duplicates(sid, "merge")
    doc = wb.session(sid).doc
    merged = [x for x in doc.annotations if x.source == "merge"]
    assert sorted(len(m.parents) for m in merged) == [2, 3]
    assert sorted(m.area for m in merged) == [100 * 100, 100 * 101]
    assert f in doc and len(doc) == 3


def test_no_duplicates_and_resolving_nothing(wb, sid):
    with_rects(wb, sid, (0, 0, 50, 50), (100, 100, 150, 150))
    v = wb.find_duplicates(sid)
    assert "No duplicates" in v.message
    with pytest.raises(WorkbenchError, match="Find duplicates first"):
        wb.resolve_duplicates(sid, "merge")
