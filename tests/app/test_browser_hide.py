"""Hide in a real browser (issue 12, item 6): H on the selected mask gives the photo back
under it (only a thin dashed outline while it stays selected) and the table says hidden.

Same set-up as test_browser.py: the app in-process on a free port with a small random SAM,
Debian chromium through playwright, screenshots in test-artifacts/.
"""

import numpy as np
import pytest
from conftest import IMAGES
from test_browser import ARTIFACTS, FRAME, app, browser, page, wait_message, wait_shown  # noqa: F401  (shared fixtures)

pytestmark = pytest.mark.browser

# The RGB values the page shows at a square of image pixels (read from the drawn canvas).
PATCH = """([x, y, r]) => { const root = document.querySelector('#canvas .acv'); const c = root.querySelector('canvas');
  const g = c.getContext('2d'); const d = window.devicePixelRatio || 1; const out = [];
  for (let dy = -r; dy <= r; dy++) for (let dx = -r; dx <= r; dx++) {
    const [sx, sy] = root._acv.toScreen(x + dx + 0.5, y + dy + 0.5);
    const p = g.getImageData(Math.floor(sx * d), Math.floor(sy * d), 1, 1).data; out.push(p[0], p[1], p[2]); }
  return out; }"""
MARK_CELLS = "#masks-table [role=gridcell][data-col='0']"


def canvas_src(page) -> str:
    """What the canvas shows now (the number of its last frame)."""
    return page.evaluate(FRAME)


def wait_canvas_changed(page, old: str) -> None:
    page.wait_for_function(f"() => ({FRAME})() !== {old!r}")
    page.wait_for_timeout(50)  # drawn on the next animation frame


def patch(page, x: int, y: int, r: int = 4) -> np.ndarray:
    values = page.evaluate(PATCH, [x, y, r])
    return np.asarray(values, np.float64).reshape(-1, 3)


def test_hiding_the_selected_mask_shows_the_photo_and_the_table_says_hidden(app, page):
    demo, _ = app
    page.locator("#upload input[type=file]").set_input_files(str(IMAGES / "dog.jpg"))
    page.wait_for_function("t => document.querySelector('#status textarea').value.includes(t)", arg="embedding cached")
    wait_shown(page)
    wb = demo.workbench
    (key,) = [k for k in wb.sessions.keys() if getattr(wb.sessions.peek(k), "name", None) == "dog.jpg"]
    sess = wb.session(key)
    h, w = sess.doc.size
    assert sess.scale == 1.0  # 800 x 534: the canvas shows image pixels one to one
    cx, cy = 400, 260
    page.wait_for_timeout(100)  # drawn on the next animation frame
    photo = patch(page, cx, cy)  # the plain photo, as the page shows it (JPEG)

    # a mask with a known interior, added through the page's own API (a point's mask from a
    # random model could be any shape)
    m = np.zeros((h, w), bool)
    m[160:360, 250:550] = True
    old = canvas_src(page)
    with sess.lock:
        ann = sess.doc.add(m, label="box")
    page.locator("#clear-selection").click()  # any action sends the new canvas and table
    wait_canvas_changed(page, old)
    old = canvas_src(page)
    page.locator("#masks-table [role=gridcell][data-col='1']").filter(has_text=str(ann)).first.click()
    wait_message(page, f"Mask {ann} selected")
    wait_canvas_changed(page, old)
    drawn = patch(page, cx, cy)
    assert np.abs(drawn - photo).mean() > 25  # the selected mask is drawn over the photo
    page.screenshot(path=str(ARTIFACTS / "hide-01-selected.png"))

    old = canvas_src(page)
    page.keyboard.press("h")  # the key acts on the selection
    wait_message(page, f"Hid mask {ann}")
    wait_canvas_changed(page, old)
    hidden = patch(page, cx, cy)
    assert np.abs(hidden - photo).mean() < 6, np.abs(hidden - photo).mean()  # the photo again (JPEG noise)
    assert not sess.doc[ann].visible
    page.wait_for_function(
        "sel => Array.from(document.querySelectorAll(sel)).some(td => td.innerText.includes('hidden'))", arg=MARK_CELLS
    )
    page.screenshot(path=str(ARTIFACTS / "hide-02-hidden-selected.png"))

    # deselected, nothing of it is drawn
    old = canvas_src(page)
    page.locator("#clear-selection").click()
    wait_message(page, "Selection cleared")
    wait_canvas_changed(page, old)
    assert np.abs(patch(page, cx, cy) - photo).mean() < 6
    page.screenshot(path=str(ARTIFACTS / "hide-03-hidden.png"))
