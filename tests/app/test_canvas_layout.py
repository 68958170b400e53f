"""The app's layout around the browser canvas at laptop and desktop sizes, and its keys.

Screenshots go to test-artifacts/ (app-1366x768.png, app-1920x1080.png, app-help.png).
"""

import re
from importlib import resources

import pytest
from test_browser import ARTIFACTS, IMAGES, app, browser, wait_shown  # noqa: F401  (shared fixtures)

PRIMARY = [
    "#canvas .acv-toolbar [data-tool=positive]",
    "#canvas .acv-toolbar [data-tool=box]",
    "#canvas .acv-toolbar [data-tool=brush]",
    "#canvas .acv-toolbar [data-tool=erase]",
    "#canvas .acv-opacity",
    "#canvas .acv-hide",
    "#canvas .acv-only",
    "#canvas .acv-help-btn",
    "#candidates",
    "#label",
    "#accept",
    "#clear",
    "#undo",
    "#redo",
    "#message",
]
TO_PAGE = """([x, y]) => { const root = document.querySelector('#canvas .acv');
  const r = root.querySelector('canvas').getBoundingClientRect(); const [sx, sy] = root._acv.toScreen(x, y);
  return [r.left + sx, r.top + sy]; }"""


def _static(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def js_keys(source: str, table: str) -> set[str]:
    """The keys of a JS object literal ``const <table> = { 'k': ..., "k": ... }``."""
    body = re.search(table + r" = \{(.*?)\n\s*\};", source, re.S).group(1)
    return set(re.findall(r"""['"]([^'"]+)['"]\s*:""", body))


def test_the_canvas_keys_and_the_page_keys_never_overlap_and_the_help_lists_both():
    canvas_js = _static("annotator.app.ui.canvas", "canvas.js")
    page_js = _static("annotator.app.ui", "static/shortcuts.js")
    canvas_keys, page_keys = js_keys(canvas_js, "KEYS"), js_keys(page_js, "keys")
    assert {"p", "n", "b", "s", "r", "e", "0", "[", "]", "?"} <= canvas_keys
    assert {"enter", "a", "escape", "m", "h", "delete", "y", "x", "j", "k", "d"} <= page_keys
    assert not canvas_keys & page_keys, canvas_keys & page_keys  # one key, one meaning
    overlay = _static("annotator.app.ui.canvas", "template.html")
    help_md = _static("annotator.app.ui", "static/help.md")
    for key in canvas_keys - {"=", "+", "-"}:  # (zoom keys are listed as "+ / -")
        shown = key.upper() if key.isalpha() else key
        assert re.search(rf"<td>[^<]*{re.escape(shown)}[^<]*</td>", overlay), f"the ? overlay misses {shown}"
        assert re.search(rf"\*\*[^*]*{re.escape(shown)}[^*]*\*\*|\({re.escape(shown)}\)", help_md), (
            f"help.md misses {shown}"
        )
    for key in ("Enter", "Esc", "Ctrl+Z", "Delete", "M", "H", "Y X J K", "PageDown", "D"):
        assert key in overlay, key


@pytest.mark.browser
@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
def test_canvas_takes_most_of_the_screen_and_primary_controls_need_no_scrolling(browser, app, width, height):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    page.goto(app[1], wait_until="load")
    page.wait_for_selector("#canvas .acv")
    page.set_input_files("#upload input[type=file]", str(IMAGES / "truck.jpg"))
    page.wait_for_function("() => document.querySelector('#status textarea').value.includes('embedding cached')")
    wait_shown(page, [1800, 1200])
    page.wait_for_timeout(300)
    page.mouse.click(*page.evaluate(TO_PAGE, [900, 700]))
    page.wait_for_function("() => document.querySelector('#message textarea').value.includes('point added')")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"app-{width}x{height}.png"))
    canvas = page.locator("#canvas canvas").bounding_box()
    assert canvas["width"] >= 0.60 * width, canvas
    assert canvas["height"] >= 0.5 * height, canvas
    for sel in PRIMARY:
        box = page.locator(sel).first.bounding_box()
        assert box is not None, sel
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, f"{sel} is below the fold: {box}"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{sel} is off to the side: {box}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width  # no sideways scrolling
    assert page.evaluate("() => document.documentElement.scrollHeight") <= height + 1  # nor down
    page.close()


@pytest.mark.browser
def test_question_mark_shows_the_keys_and_esc_closes_them(browser, app):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(60_000)
    page.goto(app[1], wait_until="load")
    page.wait_for_selector("#canvas .acv")
    help_box = page.locator("#canvas .acv-help")
    assert not help_box.is_visible()
    page.locator("#canvas canvas").hover()
    page.keyboard.press("?")
    assert help_box.is_visible()
    text = help_box.inner_text()
    for key in ("Right click", "Space+drag", "[ ]", "1-9", "Ctrl+Z", "Enter", "Esc", "Delete", "R E"):
        assert key in text, key
    page.screenshot(path=str(ARTIFACTS / "app-help.png"))
    page.keyboard.press("Escape")
    assert not help_box.is_visible()
    page.close()


@pytest.mark.browser
def test_in_the_app_right_click_is_negative_a_drag_is_a_box_and_view_changes_ask_nothing(browser, app):
    from test_browser import Canvas, session_showing, wait_message

    demo, url = app
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#canvas .acv")
    page.set_input_files("#upload input[type=file]", str(IMAGES / "dog.jpg"))
    page.wait_for_function("() => document.querySelector('#status textarea').value.includes('embedding cached')")
    wait_shown(page, [800, 534])
    sess = session_showing(demo, "dog.jpg")
    canvas = Canvas(page)
    canvas.click(300, 300)
    wait_message(page, "positive point added")
    canvas.click(420, 200, button="right")
    wait_message(page, "negative point added")
    assert sess.prompt.labels == [1, 0] and sess.mode == "positive"
    assert abs(sess.prompt.points[1][0] - 420) < 1.5 and abs(sess.prompt.points[1][1] - 200) < 1.5
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.promptMask !== null")
    canvas.drag(480, 130, 670, 270)
    wait_message(page, "box set")
    assert max(abs(a - b) for a, b in zip(sess.prompt.box, (480, 130, 670, 270), strict=True)) < 1.5
    page.wait_for_timeout(300)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    paints = int(page.eval_on_selector("#canvas .acv", "e => e.dataset.paints"))
    page.eval_on_selector("#canvas .acv-opacity", "e => { e.value = 90; e.dispatchEvent(new Event('input')); }")
    page.locator("#canvas .acv-hide").check()
    page.locator("#canvas .acv-hide").uncheck()
    page.keyboard.press("o")  # only selected, by key
    page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.paints) > {paints + 2}")
    page.wait_for_timeout(500)
    assert requests == [], requests
    page.close()
