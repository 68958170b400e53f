"""Keys, focus and prompt modes in a real browser (chromium + playwright).

Uses the fixtures of ``test_browser`` (the app in-process on a tiny random SAM). The keys
are checked through what they do on the server-side session, not by their look.
"""

import pytest

from test_browser import (LOADED, IMAGES, Canvas, app, browser, page, session_showing,  # noqa: F401
                          shot, wait_message, wait_rows, wait_status)

pytestmark = pytest.mark.browser

LABEL = "#label input, #label textarea"
NOT_IN_LABEL = "() => !(document.activeElement && document.activeElement.closest('#label'))"


def checked_mode(page) -> str:
    return page.locator("#mode input[type=radio]:checked").get_attribute("value")


def wait_mode(page, value: str) -> None:
    page.wait_for_function("v => document.querySelector(`#mode input[value=${v}]`).checked", arg=value)


def open_example(page, demo, name="tabletop"):
    page.get_by_role("tab", name="Image").click()
    page.locator("#examples").get_by_text(name, exact=True).click()
    wait_status(page, f"{name}.jpg")
    wait_status(page, "embedding cached")
    page.wait_for_function(LOADED, arg=["#canvas img", ""])
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
