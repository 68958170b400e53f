"""YOLO-seg, labelme, VOC and COCO exports: round trips through our own readers, the read-back
check, class ids that stay put, and the documented loss."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from conftest import LABELME_COCO
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO

from annotator.annotations import rle as rle_utils
from annotator.cli import main
from annotator.formats import coco, convert, labelme, polygons, voc, yolo
from annotator.projects.store import Project

LABELME = LABELME_COCO / "annotations.json"
H, W = 48, 64
CLASSES = [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "traffic light"}]


def blob(parts, holes):
    """A mask of ellipses (several parts) with round holes cut out of it."""
    m = np.zeros((H, W), np.uint8)
    for cx, cy, ax, ay, angle in parts:
        cv2.ellipse(m, (cx, cy), (ax, ay), angle, 0, 360, 1, -1)
    for cx, cy, r in holes:
        cv2.circle(m, (cx, cy), r, 0, -1)
    return m.astype(bool)


masks_with_holes = st.builds(
    blob,
    st.lists(
        st.tuples(
            st.integers(0, W - 1), st.integers(0, H - 1), st.integers(2, 18), st.integers(2, 18), st.floats(0, 180)
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.tuples(st.integers(0, W - 1), st.integers(0, H - 1), st.integers(1, 5)), max_size=4),
).filter(lambda m: m.any())


def dataset_of(masks, labels=None, size=(H, W)):
    labels = labels or [CLASSES[k % 3]["id"] for k in range(len(masks))]
    anns = [
        {"id": 10 + k, "image_id": 7, "category_id": c, "segmentation": rle_utils.encode(m)}
        for k, (m, c) in enumerate(zip(masks, labels, strict=True))
    ]
    return coco.CocoDataset(
        [{"id": 7, "file_name": "dir/photo.jpg", "height": size[0], "width": size[1]}], anns, [dict(c) for c in CLASSES]
    )


def round_trip(ds, fmt, tmp, tolerance=0.0):
    out = tmp / (fmt + (".json" if fmt.startswith("coco") else ""))
    report = convert.export(ds, out, fmt, tolerance=tolerance)
    if fmt == "yolo":  # no image file in these tests: YOLO needs the size from elsewhere
        back = yolo.read(out, sizes={"photo": (ds.images[0]["height"], ds.images[0]["width"])})
    else:
        back = convert.load(out).dataset
    return report, back


def names_and_masks(ds):
    names = {c["id"]: c["name"] for c in ds.categories}
    return [(names[a["category_id"]], rle_utils.decode(a["segmentation"])) for a in ds.annotations]


# -- round trips with holes and parts -------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(st.lists(masks_with_holes, min_size=1, max_size=4))
def test_every_format_gives_back_the_masks_and_classes(tmp_path_factory, masks):
    ds = dataset_of(masks)
    want = names_and_masks(ds)
    for fmt in ("coco-rle", "coco-polygon", "yolo", "labelme"):
        report, back = round_trip(ds, fmt, tmp_path_factory.mktemp(fmt))
        assert report.exact and report.min_iou == 1.0, fmt
        got = names_and_masks(back)
        assert [n for n, _ in got] == [n for n, _ in want], fmt
        for (_, a), (_, b) in zip(got, want, strict=True):
            assert np.array_equal(a, b), fmt  # holes and parts included
        if fmt != "coco-rle" and fmt != "coco-polygon":  # the class list comes back in order
            assert [c["name"] for c in back.categories] == ["cat", "dog", "traffic light"]


@settings(max_examples=10, deadline=None)
@given(st.lists(masks_with_holes, min_size=1, max_size=5))
def test_voc_is_exact_for_masks_that_do_not_overlap(tmp_path_factory, masks):
    # make them disjoint: each pixel goes to the topmost mask that had it
    taken = np.zeros((H, W), bool)
    disjoint = []
    for m in reversed(masks):
        disjoint.append(m & ~taken)
        taken |= m
    disjoint = [m for m in reversed(disjoint) if m.any()]
    ds = dataset_of(disjoint)
    report, back = round_trip(ds, "voc", tmp_path_factory.mktemp("voc"))
    assert report.exact
    got, want = names_and_masks(back), names_and_masks(ds)
    assert [n for n, _ in got] == [n for n, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    assert [c["name"] for c in back.categories] == ["cat", "dog", "traffic light"]


def test_voc_overlaps_keep_the_topmost_and_say_what_is_hidden(tmp_path):
    a, b, c = (np.zeros((H, W), bool) for _ in range(3))
    a[5:30, 5:30] = True
    b[20:40, 20:40] = True  # on top of a
    c[22:28, 22:28] = True  # under b entirely
    ds = dataset_of([a, c, b])
    report, back = round_trip(ds, "voc", tmp_path)
    got = names_and_masks(back)
    assert len(got) == 2 and "1 mask entirely under others" in report.line()
    assert np.array_equal(got[0][1], a & ~b) and np.array_equal(got[1][1], b)
    assert report.min_iou == pytest.approx((a & ~b).sum() / a.sum())


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 24).flatmap(
        lambda h: st.integers(1, 24).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda v: np.array(v, bool).reshape(h, w)
            )
        )
    )
)
def test_one_ring_per_object_is_exact_even_for_noise(mask):
    # YOLO writes every part and hole of a mask into one ring: bridges cancel under even-odd
    res = polygons.polygonise(rle_utils.encode(mask), single=True)
    if mask.any():
        assert len(res.rings) == 1
    assert np.array_equal(rle_utils.decode(polygons.rasterise(res.rings, *mask.shape)), mask)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda h: st.integers(1, 30).flatmap(
            lambda w: st.lists(st.integers(0, 4), min_size=h * w, max_size=h * w).map(
                lambda v: np.array(v, np.uint16).reshape(h, w)
            )
        )
    )
)
def test_rle_crops_and_label_maps(labels):
    per_value = rle_utils.from_label_map(labels)
    assert set(per_value) == set(np.unique(labels).tolist()) - {0}
    for v, rle in per_value.items():
        m = labels == v
        assert np.array_equal(rle_utils.decode(rle), m)
        crop, x0, y0 = rle_utils.decode_bbox(rle)
        ys, xs = np.nonzero(m)
        assert (x0, y0) == (xs.min(), ys.min())
        assert np.array_equal(crop, m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        assert rle_utils.encode_bbox(crop, x0, y0, labels.shape)["counts"] == rle["counts"]


# -- the shared labelme COCO file -------------------------------------------------------------------
def pycoco_masks(path):
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(str(path))
    return c, [
        (c.cats[c.anns[a]["category_id"]]["name"], c.annToMask(c.anns[a]).astype(bool))
        for a in sorted(c.anns, key=lambda a: (c.anns[a]["image_id"], a))
    ]


@pytest.mark.parametrize("fmt", ["coco-rle", "coco-polygon", "yolo", "labelme", "voc"])
def test_labelme_file_round_trip(tmp_path, fmt):
    c, want = pycoco_masks(LABELME)
    out = tmp_path / ("out.json" if fmt.startswith("coco") else "out")
    imported, report = convert.convert(LABELME, out, fmt)  # images beside it are copied
    back = convert.load(out)
    assert back.format == ("coco" if fmt.startswith("coco") else fmt)
    order = sorted(back.dataset.images, key=lambda i: i["id"])
    stems = {i["id"]: (i.get("labelme_file") or i["file_name"]).rsplit("/", 1)[-1].split(".")[0] for i in order}
    by_stem = {}
    for a in back.dataset.annotations:
        by_stem.setdefault(stems[a["image_id"]], []).append(a)
    names = back.dataset.category_names
    got = []
    for img in sorted(c.imgs.values(), key=lambda i: i["id"]):
        stem = img["file_name"].rsplit("/", 1)[-1].split(".")[0] if not fmt.startswith("coco") else None
        anns = by_stem[stem] if stem else [a for a in back.dataset.annotations if a["image_id"] == img["id"]]
        got += [(names[a["category_id"]], rle_utils.decode(a["segmentation"])) for a in anns]
    assert [n for n, _ in got] == [n for n, _ in want]
    if fmt == "voc":  # the documented loss: where masks overlap, the topmost (later) one wins
        per_image = {}
        for a in sorted(c.anns.values(), key=lambda a: a["id"]):
            per_image.setdefault(a["image_id"], []).append(c.annToMask(a).astype(bool))
        visible = []
        for masks in (per_image[i] for i in sorted(per_image)):
            for k, m in enumerate(masks):
                above = np.zeros_like(m)
                for n in masks[k + 1 :]:
                    above |= n
                visible.append(m & ~above)
        assert all(np.array_equal(a, b) for (_, a), b in zip(got, visible, strict=True))
        assert 0.97 < report.min_iou < 1.0
    else:
        assert report.exact
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    if fmt in ("yolo", "labelme", "voc"):
        assert [x["name"] for x in back.dataset.categories] == [x["name"] for x in c.dataset["categories"]]
        assert not any("not found" in n for n in report.notes)  # the JPEGs were copied


def test_tolerance_costs_iou_and_is_reported(tmp_path):
    ds = coco.load(LABELME)
    exact = convert.export(ds, tmp_path / "exact.json", "coco-polygon")
    coarse = convert.export(ds, tmp_path / "coarse.json", "coco-polygon", tolerance=2)
    n_exact = sum(
        len(p) for a in json.loads((tmp_path / "exact.json").read_text())["annotations"] for p in a["segmentation"]
    )
    n_coarse = sum(
        len(p) for a in json.loads((tmp_path / "coarse.json").read_text())["annotations"] for p in a["segmentation"]
    )
    assert n_coarse < n_exact / 2
    assert exact.line() == "12 masks on 3 images · COCO polygons exact"
    assert 0.9 < coarse.min_iou < 1.0
    assert f"COCO polygons min IoU {int(coarse.min_iou * 1000) / 1000:.3f} (tolerance 2 px)" in coarse.line()
    assert convert.report_line([exact, coarse]).startswith("12 masks · COCO polygons exact · COCO polygons min")


def test_tolerance_never_erases_a_mask():
    m = np.zeros((20, 20), bool)
    m[5, 5:7] = True  # two pixels: any simplification flattens them
    res = polygons.polygonise(rle_utils.encode(m), tolerance=5)
    assert res.iou == 1.0 and np.array_equal(rle_utils.decode(res.rle), m)


def test_yolo_holes_survive_ultralytics_rasteriser():
    # Ultralytics fills a label polygon with cv2.fillPoly on int32 pixel coordinates
    m = np.zeros((H, W), bool)
    m[4:44, 4:60] = True
    m[14:34, 20:44] = False  # a hole
    m[40:44, 4:8] = False
    ring = polygons.polygonise(rle_utils.encode(m), single=True).rings[0]
    filled = np.zeros((H, W), np.uint8)
    cv2.fillPoly(filled, [ring.astype(np.int32)], 1)
    filled = filled.astype(bool)
    assert not filled[16:32, 22:42].any()  # the hole is still a hole
    assert (filled & m).sum() / (filled | m).sum() > 0.9


# -- the read-back check --------------------------------------------------------------------------
def test_a_failed_read_back_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    ds = dataset_of([blob([(20, 20, 10, 8, 0)], []), blob([(45, 30, 9, 9, 0)], [])])
    real = labelme.read

    def drops_a_mask(path, **kw):
        back = real(path, **kw)
        back.annotations.pop()
        return back

    monkeypatch.setattr(labelme, "read", drops_a_mask)
    with pytest.raises(convert.ExportCheckError, match="2 masks written, 1 read back"):
        convert.export(ds, tmp_path / "out", "labelme")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left

    def wrong_class(path, **kw):
        back = real(path, **kw)
        back.annotations[0]["category_id"] = back.annotations[1]["category_id"]
        return back

    monkeypatch.setattr(labelme, "read", wrong_class)
    with pytest.raises(convert.ExportCheckError, match="class 'cat' reads back as 'dog'"):
        convert.export(ds, tmp_path / "out", "labelme")


def test_a_shifted_mask_fails_the_check(tmp_path, monkeypatch):
    ds = dataset_of([blob([(20, 20, 10, 8, 0)], [(20, 20, 3)])])
    real = yolo._read_labels

    def shifted(*args):
        for k, rle, cls in real(*args):
            yield k, rle_utils.encode(np.roll(rle_utils.decode(rle), 1, axis=1)), cls

    monkeypatch.setattr(yolo, "_read_labels", shifted)
    with pytest.raises(convert.ExportCheckError, match="different mask"):
        convert.export(ds, tmp_path / "out.zip", "yolo")
    assert not (tmp_path / "out.zip").exists()


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an empty folder"):
        convert.export(dataset_of([blob([(20, 20, 10, 8, 0)], [])]), tmp_path / "out", "voc")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


# -- class ids stay put -------------------------------------------------------------------------
def test_project_exports_keep_class_ids(tmp_path, truck):
    from PIL import Image

    path = tmp_path / "truck.png"
    Image.fromarray(truck[:64, :96]).save(path)
    m = np.zeros((64, 96), bool)
    with Project(tmp_path / "p.annotator") as p:
        image_id = p.add_image(path).id
        recs = []
        for k, label in enumerate(["dog", "cat", None]):
            mk = m.copy()
            mk[5 + 15 * k : 15 + 15 * k, 10:40] = True
            recs.append(
                {
                    "id": k + 1,
                    "size": [64, 96],
                    "counts": rle_utils.encode(mk)["counts"].decode(),
                    "label": label,
                    "review": "accepted",
                }
            )
        p.save(image_id, recs)
        first = p.export(tmp_path / "y1", "yolo")
        p.add_category("bird")  # a new class after the first export
        recs[0]["label"] = "bird"
        p.save(image_id, recs)
        second = p.export(tmp_path / "y2", "yolo")
        coco_report = p.export(tmp_path / "c.json", "coco-polygon")
        voc_report = p.export(tmp_path / "v.zip", "voc")
    assert first.exact and second.exact and coco_report.exact and voc_report.exact
    names1 = yolo._names_of(yolo._load_yaml(tmp_path / "y1" / "data.yaml"), tmp_path)
    names2 = yolo._names_of(yolo._load_yaml(tmp_path / "y2" / "data.yaml"), tmp_path)
    assert names1 == ["dog", "cat", "object"]
    assert names2[:3] == names1 and names2[3] == "bird"  # old classes keep their index
    assert (tmp_path / "y1" / "images" / "truck.png").is_file()  # the image travels with it
    lines2 = (tmp_path / "y2" / "labels" / "truck.txt").read_text().splitlines()
    assert [int(line.split()[0]) for line in lines2] == [3, 1, 2]
    cats = {c["name"]: c["id"] for c in json.loads((tmp_path / "c.json").read_text())["categories"]}
    assert cats == {"dog": 1, "cat": 2, "object": 3, "bird": 4}


def test_documents_export_in_one_call(tmp_path):
    from annotator.annotations.document import AnnotationDocument

    doc = AnnotationDocument(H, W)
    doc.add(blob([(20, 20, 10, 8, 0)], [(20, 20, 3)]), label="dog")
    doc.add(blob([(45, 30, 9, 9, 0)], []))  # no label: "object"
    rejected = doc.add(blob([(10, 40, 5, 5, 0)], []), label="cat")
    doc.reject(rejected)
    report = convert.export_documents(
        [(doc, {"id": 1, "file_name": "a.png"})], tmp_path / "a", "labelme", categories=[{"id": 4, "name": "dog"}]
    )
    assert report.line() == "2 masks on 1 image · labelme exact"
    assert (tmp_path / "a" / "labels.txt").read_text().split("\n")[:2] == ["dog", "object"]


# -- bad input -------------------------------------------------------------------------------------
def test_bad_yolo_labels_name_file_and_line(tmp_path):
    convert.export(dataset_of([blob([(20, 20, 10, 8, 0)], [])]), tmp_path / "y", "yolo")
    (tmp_path / "y" / "labels" / "photo.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n7 0.1 0.1 0.2 0.1 0.2 0.2\n")
    with pytest.raises(coco.CocoError, match=r"photo.txt line 2: class 7 is not one of the 3 classes"):
        yolo.read(tmp_path / "y", sizes={"photo": (H, W)})
    (tmp_path / "y" / "labels" / "photo.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(coco.CocoError, match="a box"):
        yolo.read(tmp_path / "y", sizes={"photo": (H, W)})
    with pytest.raises(coco.CocoError, match="its image is missing"):
        yolo.read(tmp_path / "y")


def test_unknown_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(coco.CocoError, match="data.yaml .YOLO."):
        convert.load(tmp_path)


def test_reads_other_tools_labelme_and_voc(tmp_path):
    shapes = [
        {
            "label": "cat",
            "points": [[2, 2], [20, 2], [20, 20], [2, 20]],
            "group_id": None,
            "shape_type": "polygon",
            "flags": {},
        },
        {"label": "cat", "points": [[30, 5], [40, 15]], "group_id": None, "shape_type": "rectangle"},
        {"label": "dog", "points": [[30, 30], [35, 35]], "group_id": None, "shape_type": "line"},
    ]
    (tmp_path / "a.json").write_text(
        json.dumps({"shapes": shapes, "imagePath": "a.jpg", "imageData": None, "imageHeight": H, "imageWidth": W})
    )
    got = convert.load(tmp_path)
    assert got.format == "labelme" and len(got.dataset.annotations) == 2
    assert got.notes == ["1 line shape left out (no area)"]
    # a VOC folder as the devkit has it: palette PNGs, 255 borders, class_names.txt
    for d in ("SegmentationClass", "SegmentationObject"):
        (tmp_path / "voc" / d).mkdir(parents=True)
    cls = np.zeros((H, W), np.uint8)
    obj = np.zeros((H, W), np.uint8)
    cls[5:15, 5:15], obj[5:15, 5:15] = 2, 1
    cls[20:30, 5:15], obj[20:30, 5:15] = 2, 2
    cls[15, 5:15], obj[15, 5:15] = voc.VOID, voc.VOID
    voc._save_palette_png(tmp_path / "voc" / "SegmentationClass" / "x.png", cls)
    voc._save_palette_png(tmp_path / "voc" / "SegmentationObject" / "x.png", obj)
    (tmp_path / "voc" / "class_names.txt").write_text("_background_\naeroplane\nbicycle\n")
    back = convert.load(tmp_path / "voc").dataset
    assert [back.category_names[a["category_id"]] for a in back.annotations] == ["bicycle", "bicycle"]
    assert [a["area"] for a in back.annotations] == [100, 100]


# -- command line -----------------------------------------------------------------------------------
def test_cli_convert_to_each_format(tmp_path, capsys):
    from annotator import cli

    assert tuple(convert.FORMATS) == cli.FORMATS  # the parser's list, kept free of format imports
    assert main(["convert", str(LABELME), "-o", str(tmp_path / "y"), "--to", "yolo", "--polygon-tolerance", "1"]) == 0
    err = capsys.readouterr().err
    assert "read coco from" in err and "12 masks on 3 images · YOLO min IoU 0.9" in err
    assert (tmp_path / "y" / "data.yaml").is_file() and len(list((tmp_path / "y" / "labels").iterdir())) == 3
    assert main(["convert", str(tmp_path / "y"), "-o", str(tmp_path / "l"), "--to", "labelme"]) == 0
    assert "read yolo from" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "l"), "-o", str(tmp_path / "v.zip"), "--to", "voc"]) == 0
    assert main(["convert", str(LABELME), "-o", str(tmp_path / "x.json"), "--to", "yolo", "--segmentation", "rle"]) == 2
    assert "disagree" in capsys.readouterr().err
    assert main(["convert", str(LABELME), "-o", str(tmp_path / "y"), "--to", "voc"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
