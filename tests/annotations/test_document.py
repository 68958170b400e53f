"""The annotation document: RLE helpers, every edit with undo/redo, the hit test."""

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import Annotation, AnnotationDocument, next_in_stack

H, W = 48, 64


def rect(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def ellipse(cx, cy, ax, ay, h=H, w=W, angle=0.0):
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (cx, cy), (ax, ay), angle, 0, 360, 1, -1)
    return m.astype(bool)


def uncompressed_runs(mask):
    """Run lengths the slow, obvious way (column-major, background first)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return runs


masks_strategy = st.integers(1, 30).flatmap(lambda h: st.integers(1, 30).flatmap(lambda w: arrays(np.bool_, (h, w))))


# -- RLE ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(masks_strategy)
def test_run_lengths_read_pycocotools_strings(mask):
    rle = rle_utils.encode(mask)
    assert rle_utils.run_lengths(rle["counts"]).tolist() == uncompressed_runs(mask)
    assert (rle_utils.decode(rle_utils.from_counts(uncompressed_runs(mask), mask.shape)) == mask).all()


def test_run_lengths_many_matches_one_by_one():
    rng = np.random.default_rng(0)
    masks = [rng.random((rng.integers(1, 40), rng.integers(1, 40))) < rng.random() for _ in range(40)]
    rles = [rle_utils.encode(m) for m in masks]
    values, offsets = rle_utils.run_lengths_many([r["counts"] for r in rles])
    for k, m in enumerate(masks):
        assert values[offsets[k] : offsets[k + 1]].tolist() == uncompressed_runs(m)


def test_normalize_accepts_every_rle_kind_and_dense():
    m = ellipse(30, 20, 12, 8)
    ref = rle_utils.encode(m)
    as_str = {"size": [H, W], "counts": ref["counts"].decode()}
    as_list = {"size": [H, W], "counts": uncompressed_runs(m)}
    for obj in (m, m.astype(np.uint8), ref, as_str, as_list):
        out = rle_utils.normalize(obj, (H, W))
        assert isinstance(out["counts"], bytes)
        assert (rle_utils.decode(out) == m).all()


@pytest.mark.parametrize(
    "rle, problem",
    [
        ({"size": [4, 4], "counts": [0, 15]}, "sum to 15"),
        ({"size": [4, 4], "counts": [3, -1, 14]}, "negative"),
        ({"size": [4, 4], "counts": "0\x7f"}, "outside"),
        ({"size": [4, 4], "counts": "0R"}, "middle of a number"),  # 'R' has the continuation bit
        ({"size": [4, 4], "counts": "0a0"}, "sum to"),
        ({"size": [4, 4]}, "'size' and 'counts'"),
        ({"size": [4, 4], "counts": [1.5, 14.5]}, "whole numbers"),
    ],
)
def test_normalize_rejects_bad_rles(rle, problem):
    with pytest.raises(rle_utils.RleError, match=problem):
        rle_utils.normalize(rle)


def test_normalize_checks_the_size():
    with pytest.raises(rle_utils.RleError, match="mask is 48x64 .* image is 10x10"):
        rle_utils.normalize(rect(0, 0, 5, 5), (10, 10))


def test_complement_and_difference_are_pixel_exact():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.random((2, 17, 23)) < 0.5
        ra, rb = rle_utils.encode(a), rle_utils.encode(b)
        assert (rle_utils.decode(rle_utils.complement(ra)) == ~a).all()
        assert (rle_utils.decode(rle_utils.difference(ra, rb)) == (a & ~b)).all()
        assert (rle_utils.decode(rle_utils.union([ra, rb])) == (a | b)).all()


def test_areas_work_past_pycocotools_255_limit():
    rles = [rle_utils.encode(rect(0, 0, 1 + k % 10, 1)) for k in range(300)]
    assert rle_utils.areas(rles).tolist() == [1 + k % 10 for k in range(300)]


# -- the document ------------------------------------------------------------------------------
def make_doc(**kwargs):
    doc = AnnotationDocument(H, W, **kwargs)
    big = doc.add(
        rect(5, 5, 45, 40),
        label="car",
        prompts={"points": [[20, 20]], "labels": [1]},
        predicted_iou=0.9,
        stability_score=0.95,
    )
    mid = doc.add(rect(10, 10, 30, 30), label="door")
    small = doc.add(ellipse(20, 20, 4, 4))
    side = doc.add(rect(50, 0, 64, 10))
    return doc, (big, mid, small, side)


def state(doc):
    return json.dumps({"records": doc.records(), "selection": sorted(doc.selection)})


# name: (set-up before the snapshot or None, the operation under test)
OPERATIONS = {
    "add": (None, lambda d, ids: d.add(rect(0, 40, 10, 48), label="x")),
    "add_many": (
        None,
        lambda d, ids: d.add_many([rect(0, 40, 5, 48), {"segmentation": rect(6, 40, 9, 48), "predicted_iou": 0.5}]),
    ),
    "select": (None, lambda d, ids: d.select([ids[0], ids[2]])),
    "select_toggle": (lambda d, ids: d.select([ids[0]]), lambda d, ids: d.select([ids[1]], mode="toggle")),
    "clear_selection": (lambda d, ids: d.select([ids[0]]), lambda d, ids: d.clear_selection()),
    "hide": (None, lambda d, ids: d.set_visible([ids[1]], False)),
    "toggle_visibility": (None, lambda d, ids: d.toggle_visibility([ids[0], ids[3]])),
    "merge": (None, lambda d, ids: d.merge([ids[1], ids[3]])),
    "merge_selection": (lambda d, ids: d.select(ids[:3]), lambda d, ids: d.merge()),
    "subtract": (None, lambda d, ids: d.subtract(ids[0], [ids[1]])),
    "delete": (None, lambda d, ids: d.delete([ids[2]])),
    "delete_selection": (lambda d, ids: d.select(ids[1:3]), lambda d, ids: d.delete()),
    "relabel": (None, lambda d, ids: d.relabel([ids[2], ids[3]], "wheel")),
    "accept": (None, lambda d, ids: d.accept([ids[0]])),
    "reject": (None, lambda d, ids: d.reject([ids[1]])),
    "reset_review": (lambda d, ids: d.accept([ids[1]]), lambda d, ids: d.set_review([ids[1]], "pending")),
    "bring_to_front": (None, lambda d, ids: d.bring_to_front([ids[0]])),
    "send_to_back": (None, lambda d, ids: d.send_to_back([ids[3]])),
    "move": (None, lambda d, ids: d.move(ids[3], 1)),
    "raise": (None, lambda d, ids: d.raise_([ids[0]])),
    "lower": (None, lambda d, ids: d.lower([ids[2]], steps=2)),
    "update_mask": (None, lambda d, ids: d.update(ids[2], mask=ellipse(20, 20, 6, 3), predicted_iou=0.7)),
    "update_fields": (None, lambda d, ids: d.update(ids[0], label="truck", meta={"note": "checked"})),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_undoes_and_redoes(name):
    setup, operation = OPERATIONS[name]
    doc, ids = make_doc()
    if setup:
        setup(doc, ids)
    before, v0 = state(doc), doc.version
    operation(doc, ids)
    after, v1 = state(doc), doc.version
    assert after != before and v1 > v0
    assert doc.undo() is not None  # exactly one step
    assert state(doc) == before
    assert doc.redo() is not None
    assert state(doc) == after
    assert doc.version == v1 + 2  # undo/redo are changes too: renderers must redraw


def test_undo_redo_walks_the_whole_history_and_a_new_edit_drops_redo():
    doc = AnnotationDocument(H, W)
    states = [state(doc)]
    a = doc.add(rect(0, 0, 10, 10))
    states.append(state(doc))
    b = doc.add(rect(5, 5, 20, 20))
    states.append(state(doc))
    doc.merge([a, b])
    states.append(state(doc))
    for expected in reversed(states[:-1]):
        assert doc.undo() is not None
        assert state(doc) == expected
    assert doc.undo() is None and not doc.can_undo
    for expected in states[1:]:
        doc.redo()
        assert state(doc) == expected
    doc.undo()
    doc.relabel([a], "new")
    assert not doc.can_redo and doc.redo() is None


def test_history_depth_is_bounded():
    doc = AnnotationDocument(H, W, max_history=3)
    for k in range(6):
        doc.add(rect(k, k, k + 5, k + 5))
    undone = 0
    while doc.undo():
        undone += 1
    assert undone == 3 and len(doc) == 3


def test_no_op_edits_add_no_history():
    doc, ids = make_doc()
    doc.select([ids[0]])
    action, version = doc.undo_action, doc.version
    doc.select([ids[0]])
    doc.relabel([ids[0]], "car")
    doc.accept([])
    assert doc.undo_action == action and doc.version == version


def test_history_shares_rle_bytes_between_states():
    doc, ids = make_doc()
    counts = doc[ids[0]].counts
    doc.relabel([ids[0]], "truck")
    doc.accept([ids[0]])
    assert doc[ids[0]].counts is counts
    doc.undo()
    doc.undo()
    assert doc[ids[0]].counts is counts


def test_merge_is_a_union_keeping_provenance_and_z():
    doc, (big, mid, small, side) = make_doc()
    union = doc.mask(mid) | doc.mask(side)
    new = doc.merge([mid, side])
    assert (doc.mask(new) == union).all()
    ann = doc[new]
    assert ann.source == "merge" and ann.parents == (mid, side)
    assert doc.ids == (big, small, new)  # in the topmost merged mask's place
    assert doc.selection == {new} and ann.label == "door"
    assert ann.area == int(union.sum())
    with pytest.raises(ValueError, match="at least two"):
        doc.merge([big])


def test_merge_collects_prompts():
    doc, (big, mid, small, side) = make_doc()
    new = doc.merge([big, mid])
    assert doc[new].prompts == [{"id": big, "prompts": {"points": [[20, 20]], "labels": [1]}}]


def test_merge_keeps_the_review_state_its_parts_share():
    doc, (big, mid, small, side) = make_doc()
    doc.accept([mid, side])
    assert doc[doc.merge([mid, side])].review == "accepted"
    doc.reject([small])
    merged = doc.merge([big, small])  # pending + rejected: to be reviewed again
    assert doc[merged].review == "pending"
    doc.undo()
    assert doc[small].review == "rejected" and doc[big].review == "pending"


def test_subtract_cuts_pixels_and_keeps_the_id():
    doc, (big, mid, small, side) = make_doc()
    expected = doc.mask(big) & ~doc.mask(mid) & ~doc.mask(small)
    doc.subtract(big, [mid, small])
    assert (doc.mask(big) == expected).all()
    assert doc[big].subtracted == (mid, small) and doc[big].label == "car"
    assert doc[big].predicted_iou == 0.9


def test_subtract_refuses_to_empty_a_mask_and_changes_nothing():
    doc, (big, mid, small, side) = make_doc()
    before, version = state(doc), doc.version
    with pytest.raises(ValueError, match="empty"):
        doc.subtract(small, [big])
    assert state(doc) == before and doc.version == version


def test_bad_ids_and_values_are_refused_clearly():
    doc, ids = make_doc()
    with pytest.raises(KeyError, match="no annotation with id 99"):
        doc.delete([99])
    with pytest.raises(ValueError, match="review must be one of"):
        doc.set_review([ids[0]], "maybe")
    with pytest.raises(ValueError, match="source must be one of"):
        doc.add(rect(0, 0, 2, 2), source="magic")
    with pytest.raises(ValueError, match="mask 0: mask is 10x10"):
        doc.add(np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="finite"):
        doc.add(rect(0, 0, 2, 2), predicted_iou=float("nan"))
    with pytest.raises(ValueError, match="replace, add, remove or toggle"):
        doc.select([ids[0]], mode="xor")


def test_add_many_names_the_bad_mask_and_adds_nothing():
    doc, ids = make_doc()
    before = state(doc)
    good = rle_utils.to_json(rle_utils.encode(rect(0, 0, 3, 3)))
    for bad, problem in (
        ({"size": [H, W], "counts": "0a0"}, "sum to"),
        ({"size": [H, W], "counts": "0R"}, "middle of a number"),
    ):
        with pytest.raises(ValueError, match=f"mask 1: .*{problem}"):
            doc.add_many([good, bad, good])
    assert state(doc) == before


def test_add_many_accepts_sam_generator_records():
    doc = AnnotationDocument(H, W)
    rle = rle_utils.to_json(rle_utils.encode(rect(1, 1, 9, 9)))
    ids = doc.add_many(
        [
            {
                "segmentation": rle,
                "area": 64,
                "bbox": [1, 1, 8, 8],
                "predicted_iou": 0.88,
                "stability_score": 0.97,
                "point_coords": [[4.0, 5.0]],
                "crop_box": [0, 0, W, H],
            }
        ]
    )
    a = doc[ids[0]]
    assert a.source == "auto" and a.predicted_iou == 0.88 and a.point_coords == [[4.0, 5.0]]
    assert a.crop_box == [0, 0, W, H] and a.area == 64 and a.bbox == (1.0, 1.0, 8.0, 8.0)
    assert doc.undo_action == "add 1 mask"


def test_records_round_trip_through_json():
    doc, ids = make_doc()
    doc.reject([ids[3]])
    doc.merge([ids[1], ids[2]])
    records = json.loads(json.dumps(doc.records()))
    again = AnnotationDocument.from_records(H, W, records)
    assert again.records() == doc.records()
    assert all(isinstance(a, Annotation) for a in again)
    new = again.add(rect(0, 0, 3, 3))
    assert new not in ids and new > max(a.id for a in doc)


def test_nbytes_counts_masks_and_index():
    doc, ids = make_doc()
    before = doc.nbytes()
    doc.build_index()
    assert doc.nbytes() > before and doc.index.nbytes > 0
    assert before >= sum(len(a.counts) for a in doc)


# -- hit test ----------------------------------------------------------------------------------
def test_hit_test_matches_dense_masks_topmost_first():
    rng = np.random.default_rng(3)
    doc = AnnotationDocument(H, W)
    for _ in range(25):
        doc.add(
            ellipse(
                int(rng.integers(0, W)),
                int(rng.integers(0, H)),
                int(rng.integers(2, 20)),
                int(rng.integers(2, 20)),
                angle=float(rng.uniform(0, 180)),
            )
        )
    dense = {a.id: a.mask() for a in doc}
    top_first = list(doc.ids)[::-1]
    for y in range(H):
        for x in range(W):
            assert doc.hit_test(x + 0.5, y + 0.3) == [i for i in top_first if dense[i][y, x]]


def test_hit_test_follows_edits_and_z_order():
    doc, (big, mid, small, side) = make_doc()
    assert doc.hit_test(20, 20) == [small, mid, big]
    doc.bring_to_front([big])
    assert doc.hit_test(20, 20) == [big, small, mid]
    doc.subtract(big, [mid])  # geometry changes under the same id: index must follow
    assert doc.hit_test(20, 20) == [small, mid]
    doc.undo()
    assert doc.hit_test(20, 20) == [big, small, mid]
    doc.set_visible([small], False)
    assert doc.hit_test(20, 20, visible_only=True) == [big, mid]
    assert doc.hit_test(-1, 5) == [] and doc.hit_test(W, 5) == [] and doc.hit_test(5, H + 2) == []


def test_click_cycles_through_nested_masks():
    doc, (big, mid, small, side) = make_doc()
    picked, seen = None, []
    for _ in range(4):
        picked = doc.pick(20, 20, picked)
        seen.append(picked)
    assert seen == [small, mid, big, small]
    assert doc.pick(1, 1) is None
    assert next_in_stack([3, 2], 7) == 3 and next_in_stack([], None) is None


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(1, 15), st.integers(1, 15)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, W - 1),
    st.integers(0, H - 1),
)
def test_hit_test_property(blobs, x, y):
    doc = AnnotationDocument(H, W)
    for cx, cy, ax, ay in blobs:
        doc.add(ellipse(cx, cy, ax, ay))
    expected = [a.id for a in reversed(doc.annotations) if a.mask()[y, x]]
    assert doc.hit_test(x, y) == expected


def test_empty_masks_are_never_hit():
    doc = AnnotationDocument(H, W)
    e = doc.add(np.zeros((H, W), bool))
    assert doc[e].area == 0 and doc.hit_test(0, 0) == []


def test_rle_inputs_match_pycocotools_area_and_bbox():
    m = ellipse(30, 20, 12, 8, angle=30)
    doc = AnnotationDocument(H, W)
    a = doc[doc.add(m)]
    ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert a.area == int(mask_utils.area(ref)) and list(a.bbox) == list(mask_utils.toBbox(ref))
