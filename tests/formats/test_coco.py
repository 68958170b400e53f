"""COCO I/O: exact RLE round trips, exact polygons with holes, other tools' files, SAM's amg.py
output, clear errors for bad files, documents and PNG label masks."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import LABELME_COCO
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools.coco import COCO
from segment_anything.utils.amg import coco_encode_rle, mask_to_rle_pytorch

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import AnnotationDocument
from annotator.formats import coco

LABELME = LABELME_COCO / "annotations.json"


def pycoco(path_or_dict) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(path_or_dict, dict):
            c = COCO()
            c.dataset = path_or_dict
            c.createIndex()
            return c
        return COCO(str(path_or_dict))


def dataset_of(masks, **ann_fields):
    h, w = masks[0].shape
    anns = [
        {"id": k + 1, "image_id": 7, "category_id": 1, "segmentation": rle_utils.encode(m), "iscrowd": 0, **ann_fields}
        for k, m in enumerate(masks)
    ]
    return coco.CocoDataset(
        [{"id": 7, "file_name": "x.jpg", "height": h, "width": w}], anns, [{"id": 1, "name": "thing"}]
    )


def blob_with_holes(h, w, blobs, holes):
    m = np.zeros((h, w), np.uint8)
    for cx, cy, ax, ay, angle in blobs:
        cv2.ellipse(m, (cx, cy), (ax, ay), angle, 0, 360, 1, -1)
    for cx, cy, r in holes:
        cv2.circle(m, (cx, cy), r, 0, -1)
    return m.astype(bool)


random_masks = st.integers(1, 40).flatmap(
    lambda h: st.integers(1, 40).flatmap(lambda w: st.lists(arrays(np.bool_, (h, w)), min_size=1, max_size=3))
)

blob_masks = st.builds(
    blob_with_holes,
    st.just(60),
    st.just(80),
    st.lists(
        st.tuples(st.integers(0, 79), st.integers(0, 59), st.integers(4, 30), st.integers(4, 30), st.floats(0, 180)),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.tuples(st.integers(0, 79), st.integers(0, 59), st.integers(1, 6)), max_size=4),
).filter(lambda m: m.sum() >= 20)


@settings(max_examples=40, deadline=None)
@given(random_masks)
def test_rle_export_import_is_pixel_exact(tmp_path_factory, masks):
    path = tmp_path_factory.mktemp("rle") / "out.json"
    coco.save(dataset_of(masks), path)
    back = coco.load(path)
    c = pycoco(path)
    for m, ann in zip(masks, back.annotations):
        assert np.array_equal(rle_utils.decode(ann["segmentation"]), m)
        assert np.array_equal(c.annToMask(c.anns[ann["id"]]).astype(bool), m)
        assert ann["area"] == int(m.sum())


@settings(max_examples=40, deadline=None)
@given(blob_masks)
def test_polygon_export_keeps_holes(tmp_path_factory, mask):
    path = tmp_path_factory.mktemp("poly") / "out.json"
    coco.save(dataset_of([mask]), path, "polygon")
    data = json.loads(path.read_text())
    assert isinstance(data["annotations"][0]["segmentation"], list)
    back = pycoco(path).annToMask(pycoco(path).anns[1]).astype(bool)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou >= 0.9
    assert np.array_equal(rle_utils.decode(coco.load(path).annotations[0]["segmentation"]), back)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 25).flatmap(lambda h: st.integers(1, 25).flatmap(lambda w: arrays(np.bool_, (h, w)))))
def test_polygons_rasterise_back_exactly_even_for_noise(mask):
    # stronger than the IoU >= 0.9 promise: outlines run on pixel edges, holes and diagonal
    # touches included, so pycocotools gives back every pixel
    polys = coco.mask_to_polygons(mask)
    if not mask.any():
        assert polys == []
        return
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    back = rle_utils.decode(coco.segmentation_to_rle(polys, *mask.shape))
    assert np.array_equal(back, mask)


def test_polygon_keeps_separate_parts_and_holes():
    m = np.zeros((40, 60), bool)
    m[5:35, 5:25] = True
    m[15:25, 10:20] = False  # a hole
    m[18:21, 13:16] = True  # an island inside the hole
    m[5:15, 40:55] = True  # a second part
    polys = coco.mask_to_polygons(m)
    assert len(polys) == 3  # ring-with-hole, island, second part
    assert np.array_equal(rle_utils.decode(coco.segmentation_to_rle(polys, 40, 60)), m)
    coarse = coco.mask_to_polygons(m, tolerance=1.0)
    back = rle_utils.decode(coco.segmentation_to_rle(coarse, 40, 60))
    assert (back & m).sum() / (back | m).sum() > 0.9


def test_reads_labelme_polygons_like_pycocotools():
    ds = coco.load(LABELME)
    ref = pycoco(LABELME)
    assert len(ds.annotations) == len(ref.anns) == 12
    assert {c["id"]: c["name"] for c in ds.categories}[0] == "_background_"
    for ann in ds.annotations:
        expected = ref.annToMask(ref.anns[ann["id"]]).astype(bool)
        assert np.array_equal(rle_utils.decode(ann["segmentation"]), expected)
        assert ann["area"] == int(expected.sum())
    assert [a["id"] for a in ds.annotations_for(2)] == [6, 7, 8, 9, 10, 11]


def test_reads_uncompressed_and_string_rles(tmp_path):
    m = blob_with_holes(30, 40, [(20, 15, 10, 8, 0.0)], [(20, 15, 3)])
    runs = rle_utils.run_lengths(rle_utils.encode(m)["counts"]).tolist()
    data = {
        "images": [{"id": 1, "height": 30, "width": 40, "file_name": "a.png"}],
        "categories": [{"id": 3, "name": "blob"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [30, 40], "counts": runs},
            },
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": rle_utils.to_json(rle_utils.encode(m))},
        ],
    }
    ds = coco.load(data)
    for ann in ds.annotations:
        assert np.array_equal(rle_utils.decode(ann["segmentation"]), m)
    coco.save(ds, tmp_path / "out.json", "polygon")
    out = json.loads((tmp_path / "out.json").read_text())
    assert isinstance(out["annotations"][0]["segmentation"], dict)  # crowd stays RLE
    assert isinstance(out["annotations"][1]["segmentation"], list)
    pycoco(tmp_path / "out.json")


def amg_records(masks):
    """What SamAutomaticMaskGenerator(output_mode="coco_rle") returns, built with SAM's own code."""
    rles = mask_to_rle_pytorch(torch.as_tensor(np.stack(masks)))
    return [
        {
            "segmentation": coco_encode_rle(r),
            "area": int(m.sum()),
            "bbox": [1.0, 2.0, 3.0, 4.0],
            "predicted_iou": 0.9 - 0.1 * k,
            "point_coords": [[10.0 + k, 12.0]],
            "stability_score": 0.95,
            "crop_box": [0, 0, m.shape[1], m.shape[0]],
        }
        for k, (r, m) in enumerate(zip(rles, masks))
    ]


def test_reads_sam_amg_output_and_keeps_its_metadata(tmp_path):
    masks = [
        blob_with_holes(60, 80, [(30, 30, 12, 9, 10.0)], []),
        blob_with_holes(60, 80, [(60, 20, 8, 15, 0.0)], [(60, 20, 3)]),
    ]
    path = tmp_path / "dog.json"
    path.write_text(json.dumps(amg_records(masks)))
    ds = coco.load(path)
    assert ds.images == [{"id": 1, "file_name": "dog", "height": 60, "width": 80}]
    for m, ann in zip(masks, ds.annotations):
        assert np.array_equal(rle_utils.decode(ann["segmentation"]), m)
        assert ann["category_id"] is None and ann["stability_score"] == 0.95
    doc = coco.to_document(ds, 1)
    assert [a.predicted_iou for a in doc] == [0.9, 0.8]
    assert doc.annotations[1].point_coords == [[11.0, 12.0]] and doc.annotations[0].source == "auto"
    out = tmp_path / "out.json"
    coco.save(ds, out)
    c = pycoco(out)
    assert c.loadCats(c.getCatIds())[0]["name"] == "object"
    assert json.loads(out.read_text())["annotations"][0]["predicted_iou"] == 0.9


def test_reads_amg_binary_mask_folder(tmp_path):
    masks = [blob_with_holes(50, 70, [(20, 20, 10, 10, 0.0)], []), blob_with_holes(50, 70, [(50, 30, 9, 6, 0.0)], [])]
    folder = tmp_path / "truck"
    folder.mkdir()
    header = (
        "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
        "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
    )
    rows = [header]
    for i, m in enumerate(masks):
        cv2.imwrite(str(folder / f"{i}.png"), m.astype(np.uint8) * 255)
        rows.append(f"{i},{m.sum()},0,0,1,1,5,6,0.{8 - i},0.9,0,0,70,50")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    ds = coco.load(folder)
    assert ds.images[0]["file_name"] == "truck"
    assert [a["predicted_iou"] for a in ds.annotations] == [0.8, 0.7]
    for m, a in zip(masks, ds.annotations):
        assert np.array_equal(rle_utils.decode(a["segmentation"]), m)


def good_file():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 5}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
            },
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": {"size": [4, 5], "counts": [2, 3, 15]}},
        ],
    }


def broken(path, value):
    data = good_file()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (
            broken(("annotations", 1, "segmentation", "size"), [5, 4]),
            r"annotation #1 \(id 11\): bad RLE: mask is 5x4 .* image is 4x5",
        ),
        (
            broken(("annotations", 1, "segmentation", "counts"), [2, 3, 16]),
            r"annotation #1 \(id 11\): bad RLE: RLE counts sum to 21",
        ),
        (broken(("annotations", 1, "segmentation", "counts"), "0\x7f"), r"annotation #1 \(id 11\): bad RLE: .*outside"),
        (broken(("annotations", 0, "bbox"), [0, -1, 2, 2]), r"annotation #0 \(id 10\): bbox has a negative value"),
        (broken(("annotations", 0, "bbox"), [0, float("nan"), 2, 2]), r"annotation #0 \(id 10\): bbox has a NaN"),
        (broken(("annotations", 0, "image_id"), 9), r"annotation #0 \(id 10\): unknown image_id 9"),
        (broken(("annotations", 0, "category_id"), 4), r"annotation #0 \(id 10\): unknown category_id 4"),
        (
            broken(("annotations", 0, "segmentation"), KeyError),
            r"annotation #0 \(id 10\): missing field 'segmentation'",
        ),
        (broken(("annotations", 1, "image_id"), KeyError), r"annotation #1 \(id 11\): missing field 'image_id'"),
        (
            broken(("annotations", 0, "segmentation"), [[0, 0, 2, 0, 2]]),
            r"annotation #0 \(id 10\): polygon 0 has an odd",
        ),
        (
            broken(("annotations", 0, "segmentation"), [[0, 0, 2, 0]]),
            r"annotation #0 \(id 10\): polygon 0 has 2 points",
        ),
        (broken(("annotations", 1, "id"), 10), r"annotation #1 \(id 10\): annotation id 10 appears twice"),
        (broken(("annotations", 0, "area"), -3), r"annotation #0 \(id 10\): area must be"),
        (broken(("images", 0, "height"), KeyError), r"image #0 \(id 1\): missing field 'height'"),
        (broken(("annotations",), {"x": 1}), r"'annotations' must be a list"),
    ],
)
def test_bad_files_name_the_annotation_and_the_problem(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(coco.CocoError, match=f"bad.json: {message}"):
        coco.load(path)


def test_bad_json_and_results_without_images(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(coco.CocoError, match="broken.json: not valid JSON: .* line 1"):
        coco.load(path)
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}]))
    with pytest.raises(coco.CocoError, match="results list .* ground truth's images"):
        coco.load(path)
    with pytest.raises(coco.CocoError, match="no such file"):
        coco.load(tmp_path / "missing.json")
    assert len(coco.load(path, images=good_file()["images"]).annotations) == 1


# -- documents ---------------------------------------------------------------------------------
def test_documents_export_with_sam_metadata_and_load_back(tmp_path):
    doc = AnnotationDocument(60, 80)
    a = doc.add(
        blob_with_holes(60, 80, [(30, 30, 20, 15, 0.0)], [(30, 30, 5)]),
        label="dog",
        prompts={"points": [[30, 30]], "labels": [1]},
        predicted_iou=0.93,
        stability_score=0.97,
    )
    doc.add(
        blob_with_holes(60, 80, [(60, 40, 8, 8, 0.0)], []),
        source="auto",
        point_coords=[[60, 40]],
        crop_box=[0, 0, 80, 60],
    )
    c = doc.add(blob_with_holes(60, 80, [(10, 50, 5, 5, 0.0)], []), label="dog")
    doc.reject([c])
    doc.accept([a])
    ds = coco.from_documents(
        [(doc, {"id": 5, "file_name": "dog.jpg"})],
        model="vit_h",
        parameters={"points_per_side": 32, "pred_iou_thresh": 0.88},
    )
    path = coco.save(ds, tmp_path / "export.json")
    c_api = pycoco(path)
    data = json.loads(path.read_text())
    assert data["info"]["model"] == "vit_h" and data["info"]["parameters"]["points_per_side"] == 32
    assert len(data["annotations"]) == 2  # the rejected mask is left out
    first, second = data["annotations"]
    assert first["predicted_iou"] == 0.93 and first["prompts"]["points"] == [[30, 30]]
    assert first["review"] == "accepted" and second["crop_box"] == [0, 0, 80, 60]
    assert {cat["name"] for cat in data["categories"]} == {"dog", "object"}
    assert np.array_equal(c_api.annToMask(c_api.anns[first["id"]]).astype(bool), doc.mask(a))
    back = coco.to_document(coco.load(path), 5)
    assert [x.label for x in back] == ["dog", "object"]  # unlabeled masks export as "object"
    assert back.annotations[0].predicted_iou == 0.93 and back.annotations[0].review == "accepted"
    assert back.annotations[1].source == "auto"
    assert np.array_equal(back.annotations[0].mask(), doc.mask(a))
    assert back.undo_action == "import 2 masks"
