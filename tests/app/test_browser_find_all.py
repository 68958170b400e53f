"""Find all (SAM 3) in the browser: type a concept, get every instance as pending masks."""

import cv2
import pytest
from test_browser import browser, open_project, page, session_showing, shot, wait_message, wait_status  # noqa: F401

from annotator.models import hf_testing
from annotator.testing import free_port

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(sam3_dir, tmp_path_factory):
    from annotator.app.ui import build_app, launch_kwargs
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("sam3", str(sam3_dir), device="cpu")
    demo = build_app(segmenter, info, projects_dir=tmp_path_factory.mktemp("projects"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def find_text(page, text: str, threshold: float) -> None:
    """The Find all tab with ``text`` and the score threshold set (not run yet)."""
    page.get_by_role("tab", name="Find all").click()
    page.locator("#find-text input, #find-text textarea").first.fill(text)
    box = page.locator("#find-threshold input[type=number]")
    box.fill(str(threshold))
    box.press("Enter")


def test_find_all_from_the_tab_adds_pending_labelled_masks(app, page, tmp_path):
    demo, _ = app
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), cv2.cvtColor(hf_testing.shapes_image(), cv2.COLOR_RGB2BGR))
    page.locator("#upload input[type=file]").set_input_files(str(path))
    wait_status(page, "embedding cached")
    sess = session_showing(demo, "street.png")
    find_text(page, "car", 0)
    page.locator("#find-all").click()
    wait_message(page, "Y accept")
    anns = sess.doc.annotations
    assert anns and {a.label for a in anns} == {"car"} and {a.source for a in anns} == {"concept"}
    assert {a.review for a in anns} == {"pending"}
    shot(page, "find-all")


def test_find_all_in_every_image_of_a_project(app, page, tmp_path):
    """The project run from the tab: progress as the images go, then every image has the
    concept's pending masks (the Workbench and API tests cover cancel and resume)."""
    from annotator.projects.store import Project

    demo, _ = app
    path = demo.workbench.projects.path("browser-streets")
    with Project(path) as project:
        pngs = [cv2.imencode(".png", hf_testing.shapes_image(seed=k)[..., ::-1])[1].tobytes() for k in range(2)]
        project.add_images(pngs, names=["a.png", "b.png"])
    open_project(page, "browser-streets")
    wait_status(page, "a.png")
    find_text(page, "car", 0)
    page.locator("#find-all-project").click()
    page.wait_for_function(
        "t => document.querySelector('#find-all-progress textarea').value.includes(t)", arg="in 2 images searched"
    )
    shot(page, "find-all-project")
    with Project(path) as project:
        records = [r for i in project.images() for r in project.records(i.id)]
        assert all(i.n_annotations > 0 for i in project.images())
    assert {(r["label"], r["review"]) for r in records} == {("car", "pending")}
