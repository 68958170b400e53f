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


def _shape_files(folder, n: int) -> list:
    import cv2

    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(n):
        paths.append(folder / f"street{k}.png")
        cv2.imwrite(str(paths[-1]), _image(seed=k)[..., ::-1])
    return paths


def test_find_all_in_every_image_of_a_project_cancels_and_resumes(sam3, tmp_path):
    from annotator.app.workbench import Workbench, WorkbenchError
    from annotator.projects.library import ProjectLibrary
    from annotator.projects.store import Project

    wb = Workbench(*sam3, projects=ProjectLibrary(tmp_path / "projects"), prefetch=False)
    with pytest.raises(WorkbenchError, match="Open or create a project"):
        list(wb.find_all_in_project("s", "car"))
    wb.open_project("s", "streets")
    wb.add_uploads("s", _shape_files(tmp_path / "imgs", 4))
    # a mask a person accepted on the shown (first) image, and a fourth image marked done
    wb.click("s", 60, 45, "positive")
    wb.accept("s", "road")
    accepted = wb.session("s").doc.records()
    wb.go_to_position("s", 3)
    wb.set_done("s", True)
    wb.go_to_position("s", 0)
    with pytest.raises(WorkbenchError, match="give a text"):
        list(wb.find_all_in_project("s", "  "))
    # cancelled after the first image: it is saved, the others are not touched
    steps = wb.find_all_in_project("s", "car", threshold=0.0)
    first = next(steps)
    assert (first.done, first.total, first.final) == (0, 3, False)
    assert "Skipped 1 image marked done" in first.view.message
    step = next(steps)
    assert (step.done, step.total) == (1, 3) and "image 1 of 3 (street0.png" in step.view.message
    wb.cancel_find_all("s")
    last = list(steps)[-1]
    assert last.final and "Cancelled after 1 image of 3" in last.view.message
    path = tmp_path / "projects" / "streets.annotator"
    with Project(path) as p:
        counts = [i.n_annotations for i in p.images()]
    assert counts[0] > 1 and counts[1:] == [0, 0, 0]
    # the shown image shows what was found, and the accepted mask is as it was
    doc = wb.session("s").doc
    assert doc.records()[0] == accepted[0] and len(doc) == counts[0]
    assert {(a.label, a.review, a.source) for a in doc.annotations[1:]} == {("car", "pending", "concept")}
    # run again: goes on with the two images not yet searched for "car"
    steps = list(wb.find_all_in_project("s", "car", threshold=0.0))
    assert "Skipped 1 image already searched for 'car' and 1 image marked done" in steps[0].view.message
    assert [s.done for s in steps if not s.final] == [0, 1, 2] and steps[-1].final
    assert "in 2 images searched" in steps[-1].view.message
    with Project(path) as p:
        after = [i.n_annotations for i in p.images()]
        assert p.records(p.images()[0].id)[0] == accepted[0]
    assert after[0] == counts[0] and min(after[1:3]) > 0 and after[3] == 0
    # and once more: nothing left to search for "car"
    (only,) = list(wb.find_all_in_project("s", "car"))
    assert only.final and "Nothing to search" in only.view.message
    assert "3 images already searched for 'car'" in only.view.message


@pytest.fixture(scope="module")
def served(sam3, tmp_path_factory):
    from annotator.app.ui import build_app
    from annotator.testing import free_port

    projects = tmp_path_factory.mktemp("projects")
    demo = build_app(*sam3, projects_dir=projects)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/", projects
    demo.close()


def test_find_all_in_every_image_through_the_api(served, tmp_path):
    from gradio_client import Client, handle_file

    from annotator.projects.store import Project

    _, url, projects = served
    message, progress_box = 2, 6  # the view's outputs, then the run's progress box
    c = Client(url, verbose=False)
    c.predict("api-streets", api_name="/open_project")
    files = [handle_file(str(p)) for p in _shape_files(tmp_path / "imgs", 2)]
    c.predict(files, api_name="/add_images")
    job = c.submit("car", 0.0, api_name="/find_all_in_project")
    job.result()  # waits for the run's end
    outputs = job.outputs()
    assert len(outputs) == 4  # the start, one step per image, the end
    assert "image 1 of 2" in outputs[1][message] and outputs[-1][progress_box] == outputs[-1][message]
    assert "Found" in outputs[-1][message] and "in 2 images searched" in outputs[-1][message]
    with Project(projects / "api-streets.annotator") as p:
        assert all(i.n_annotations > 0 for i in p.images())
        labels = {r["label"] for i in p.images() for r in p.records(i.id)}
    assert labels == {"car"}
    c.predict(api_name="/cancel_find_all")  # nothing running: nothing happens
    again = c.predict("car", 0.0, api_name="/find_all_in_project")
    assert "Nothing to search" in again[message] and "2 images already searched for 'car'" in again[message]
