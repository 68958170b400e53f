"""SAM 3's "find all" through the app's Workbench and ``annotator auto --text``, on a tiny
random SAM 3 folder laid out like facebook/sam3 (no Hub access)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from annotator.models import hf_testing  # noqa: E402
from annotator.models.loading import load_segmenter  # noqa: E402

_image = hf_testing.shapes_image


@pytest.fixture(scope="module")
def sam2(sam2_dir):
    return load_segmenter("sam2.1-tiny", str(sam2_dir), device="cpu")


@pytest.fixture(scope="module")
def sam3(sam3_dir):
    return load_segmenter("sam3", str(sam3_dir), device="cpu")


def test_find_all_needs_sam3(sam2):
    from annotator.app.workbench import Workbench, WorkbenchError

    wb = Workbench(*sam2, prefetch=False)
    wb.open_image("s", _image(), "street.png")
    with pytest.raises(WorkbenchError, match="needs SAM 3.*--model sam3"):
        wb.find_all("s", "car")


def test_workbench_find_all_adds_pending_labelled_masks_best_first(sam3):
    from annotator.app.workbench import Workbench, WorkbenchError

    predictor, info = sam3
    wb = Workbench(predictor, info, prefetch=False)
    wb.open_image("s", _image(), "street.png")
    view = wb.find_all("s", "car", threshold=0.0)
    doc = wb.session("s").doc
    anns = doc.annotations
    assert anns and {a.label for a in anns} == {"car"} and {a.review for a in anns} == {"pending"}
    assert {a.source for a in anns} == {"concept"}
    scores = [a.meta["score"] for a in sorted(anns, key=lambda a: a.id)]
    assert scores == sorted(scores, reverse=True)
    assert wb.session("s").cursor == min(a.id for a in anns)
    assert "Y accept" in view.message
    first = wb.session("s").cursor
    wb.review("s", "accepted")
    assert doc[first].review == "accepted" and wb.session("s").cursor != first
    n = len(doc)
    wb.find_all("s", "car", boxes=[[30, 20, 90, 70]], box_labels=[1], threshold=0.0)
    assert len(doc) > n
    with pytest.raises(WorkbenchError, match="Nothing was changed"):
        wb.find_all("s", "")
    wb.undo("s")
    assert len(doc) == n  # one undoable step
    out = wb.export("s", figures=False, out_dir=wb.export_root / "t")
    data = json.loads(out.coco.read_text())
    assert {a["model"] for a in data["annotations"]} == {info.model_tag}
    assert all("score" in a for a in data["annotations"])
    assert data["info"]["model"] == info.model_tag
    # clicks still work on the same image, through SAM 3's tracker
    wb.click("s", 60, 45, "positive")
    assert wb.session("s").prompt.mask is not None


def test_cli_auto_text_writes_categories_and_encodes_each_text_once(tmp_path, sam3_dir, monkeypatch):
    import cv2
    from transformers import Sam3Model

    from annotator.cli import main

    calls = []
    original = Sam3Model.get_text_features

    def counted(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(Sam3Model, "get_text_features", counted)
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"im{k}.png"), _image(seed=k)[..., ::-1])
    out = tmp_path / "out.json"
    rc = main(
        [
            "auto",
            str(folder),
            "--text",
            "car",
            "--text",
            "person",
            "--model",
            "sam3",
            "--checkpoint",
            str(sam3_dir),
            "--threshold",
            "0",
            "-o",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert len(calls) == 2  # one per text, for three images
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]][:2] == ["car", "person"]
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert {names[a["category_id"]] for a in data["annotations"]} == {"car", "person"}
    assert len({a["image_id"] for a in data["annotations"]}) == 3
    assert all(a["model"].startswith("sam3 (facebook/sam3@local folder)") for a in data["annotations"])
    # a second run resumes: nothing is found twice
    n = len(data["annotations"])
    assert (
        main(
            [
                "auto",
                str(folder),
                "--text",
                "car",
                "--text",
                "person",
                "--model",
                "sam3",
                "--checkpoint",
                str(sam3_dir),
                "--threshold",
                "0",
                "-o",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert len(json.loads(out.read_text())["annotations"]) == n


def test_the_box_drawn_on_the_canvas_is_an_exemplar(sam3):
    from annotator.app.workbench import Workbench, WorkbenchError

    wb = Workbench(*sam3, prefetch=False)
    wb.open_image("s", _image(), "street.png")
    with pytest.raises(WorkbenchError, match="Draw a box first"):
        wb.find_all("s", None, threshold=0.0, exemplar="positive")
    wb.click("s", 30, 20, "box")
    wb.click("s", 90, 70, "box")  # the prompt's box: the exemplar
    wb.find_all("s", None, threshold=0.0, exemplar="positive")
    by_box = wb.session("s").doc.records()
    # the same search with the box given explicitly finds the same masks
    wb2 = Workbench(*sam3, prefetch=False)
    wb2.open_image("s", _image(), "street.png")
    wb2.find_all("s", None, boxes=[[30, 20, 90, 70]], box_labels=[1], threshold=0.0)
    explicit = wb2.session("s").doc.records()
    assert by_box and [r["counts"] for r in by_box] == [r["counts"] for r in explicit]
