"""Keys, focus and prompt modes in a real browser (chromium + playwright).

Uses the fixtures of ``test_browser`` (the app in-process on a tiny random SAM). The keys
are checked through what they do on the server-side session, not by their look.
"""

import pytest
from test_browser import (  # noqa: F401
    IMAGES,
    Canvas,
    app,
    browser,
    open_project,
    page,
    session_showing,
    shot,
    wait_message,
    wait_rows,
    wait_shown,
    wait_status,
)

pytestmark = pytest.mark.browser

LABEL = "#label input, #label textarea"
NOT_IN_LABEL = "() => !(document.activeElement && document.activeElement.closest('#label'))"


# the prompt mode is the canvas's tool (its toolbar shows it; the server keeps it too)
def checked_mode(page) -> str:
    return page.locator("#canvas .acv").get_attribute("data-tool")


def wait_mode(page, value: str) -> None:
    page.wait_for_function("v => document.querySelector('#canvas .acv').dataset.tool === v", arg=value)


def open_example(page, demo, name="tabletop"):
    page.get_by_role("tab", name="Image").click()
    page.locator("#examples").get_by_text(name, exact=True).click()
    wait_status(page, f"{name}.jpg")
    wait_status(page, "embedding cached")
    wait_shown(page)
    return session_showing(demo, f"{name}.jpg")


def test_enter_in_the_label_field_accepts_and_leaves_the_field(app, page):
    """Item 4: after Enter in the Label field, S/N/B are mode keys and never reach the label."""
    demo, _ = app
    sess = open_example(page, demo)
    canvas = Canvas(page)
    canvas.click(260, 400)  # the plate
    wait_message(page, "positive point added")
    label = page.locator(LABEL).first
    label.fill("apple")
    label.press("Enter")
    wait_message(page, "Added mask 1 (apple)")
    page.wait_for_function(NOT_IN_LABEL)
    for key, mode in (("s", "select"), ("n", "negative"), ("b", "box")):
        page.keyboard.press(key)
        wait_mode(page, mode)
    assert label.input_value() == "apple"
    # the next mask, drawn as a box and accepted with the key, keeps the label as typed
    canvas.click(480, 380)
    wait_message(page, "first corner")
    canvas.click(700, 560)
    wait_message(page, "box set")
    page.keyboard.press("a")
    wait_message(page, "Added mask 2")
    assert [a.label for a in sess.doc.annotations] == ["apple", "apple"]
    assert label.input_value() == "apple"
    shot(page, "keys-label-focus")


def test_accept_returns_to_positive_point_but_box_stays_box(app, page):
    """Item 5: a mask drawn in Negative mode, once accepted, leaves the mode at Positive."""
    demo, _ = app
    sess = open_example(page, demo)
    canvas = Canvas(page)
    canvas.click(260, 400)
    wait_message(page, "positive point added")
    page.keyboard.press("n")
    wait_mode(page, "negative")
    canvas.click(290, 400)  # the doughnut's hole, say: where the mask must not reach
    wait_message(page, "negative point added")
    page.keyboard.press("Enter")
    wait_message(page, "Added mask")
    wait_mode(page, "positive")
    assert sess.mode == "positive"
    # the next object's first click is positive
    canvas.click(430, 530)  # the red apple
    wait_message(page, "positive point added")
    assert sess.prompt.labels == [1]
    page.keyboard.press("Escape")
    wait_message(page, "Prompt cleared")
    # box stays box
    page.keyboard.press("b")
    wait_mode(page, "box")
    canvas.click(480, 380)
    wait_message(page, "first corner")
    canvas.click(700, 560)
    wait_message(page, "box set")
    page.keyboard.press("Enter")
    wait_message(page, "Added mask")
    assert checked_mode(page) == "box" and sess.mode == "box"
    shot(page, "keys-mode-after-accept")


def test_the_keys_the_readme_promises(app, page):
    """README: Esc clears, A accepts, Ctrl+Z / Ctrl+Y undo / redo, J / K and the arrows
    move the review, X rejects, H hides the selection."""
    demo, _ = app
    sess = open_example(page, demo)
    canvas = Canvas(page)
    canvas.click(260, 400)
    wait_message(page, "positive point added")
    page.keyboard.press("Escape")
    wait_message(page, "Prompt cleared")
    assert sess.prompt.empty
    canvas.click(260, 400)
    wait_message(page, "positive point added")
    page.keyboard.press("a")
    wait_message(page, "Added mask 1")
    page.keyboard.press("Control+z")
    wait_message(page, "Undid")
    assert len(sess.doc) == 0
    page.keyboard.press("Control+y")
    wait_message(page, "Redid")
    assert sorted(sess.doc.ids) == [1]
    canvas.click(430, 530)
    wait_message(page, "positive point added")
    page.keyboard.press("a")
    wait_message(page, "Added mask 2")
    page.get_by_role("tab", name="Masks").click()
    wait_rows(page, 2)
    page.locator("body").click(position={"x": 5, "y": 5})  # focus off any field
    moves = [("ArrowRight", 1), ("ArrowRight", 2), ("k", 1), ("ArrowLeft", 2), ("j", 1)]
    for key, cursor in moves:
        page.keyboard.press(key)
        page.wait_for_function(
            f"() => document.querySelector('#message textarea').value.includes('Reviewing mask {cursor} ')"
        )
        assert sess.cursor == cursor, (key, sess.cursor)
    page.keyboard.press("x")
    wait_message(page, "rejected")
    assert sess.doc[1].review == "rejected" and sess.doc[2].review == "accepted"
    # H hides the selection
    page.keyboard.press("s")
    wait_mode(page, "select")
    sess.doc.select([], "replace")
    page.locator("#masks-table [role=gridcell][data-col='1']").filter(has_text="2").first.click()
    wait_message(page, "Mask 2 selected")
    page.keyboard.press("h")
    wait_message(page, "Hid")
    assert not sess.doc[2].visible and sess.doc[1].visible
    shot(page, "keys-readme")


def test_project_keys_and_view_options_after_a_reload(app, page):
    """README: PageDown / PageUp step through the project's images, D marks done; a
    reloaded page reopens the project with its view options."""
    demo, _ = app
    open_project(page, "keys-test")
    wait_message(page, "Project keys-test is empty")
    page.locator("#add-images input[type=file]").set_input_files([str(IMAGES / "dog.jpg"), str(IMAGES / "truck.jpg")])
    wait_status(page, "dog.jpg 800x534 · embedding cached")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("PageDown")
    # D at once, while the image's embedding is still being computed: the answer of that
    # computation must not show the image pending again
    wait_status(page, "truck.jpg 1800x1200")
    page.keyboard.press("d")
    wait_status(page, "image 2/2 (done)")
    page.keyboard.press("PageUp")
    wait_status(page, "dog.jpg 800x534")
    # view options (the canvas's toolbar): outlines off, coverage on
    page.locator("#canvas .acv-outlines").uncheck()
    page.locator("#canvas .acv-coverage").check()
    wait_message(page, "Coverage")
    sess = session_showing(demo, "dog.jpg")
    assert sess.view.outlines is False and sess.view.coverage is True
    page.reload()
    page.wait_for_selector("#canvas")
    wait_status(page, "dog.jpg 800x534")
    page.wait_for_function("() => document.querySelector('#canvas .acv-coverage').checked")
    assert not page.locator("#canvas .acv-outlines").is_checked()
    shot(page, "keys-project-reload")


def test_accept_through_the_api_says_the_next_mode(app):
    """Item 5 through gradio_client: /accept's last output is the mode the next object
    starts in (positive after a negative point; box stays box)."""
    from gradio_client import Client, handle_file

    _, url = app
    c = Client(url, verbose=False)
    c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    c.predict(300, 300, "positive", api_name="/click")
    c.predict(420, 200, "negative", api_name="/click")
    out = c.predict("dog", api_name="/accept")
    assert "Added mask 1 (dog)" in out[2] and out[-1] == "positive"
    c.predict(100, 100, "box", api_name="/click")
    c.predict(500, 400, "box", api_name="/click")
    out = c.predict("dog", api_name="/accept")
    assert "Added mask 2" in out[2] and out[-1] == "box"
