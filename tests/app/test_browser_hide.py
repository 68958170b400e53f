"""Hide in a real browser (issue 12, item 6): H on the selected mask gives the photo back
under it (only a thin dashed outline while it stays selected) and the table says hidden.

Same set-up as test_browser.py: the app in-process on a free port with a small random SAM,
Debian chromium through playwright, screenshots in test-artifacts/.
"""

import numpy as np
import pytest
from conftest import IMAGES
from test_browser import ARTIFACTS, LOADED, app, browser, page, wait_message  # noqa: F401  (shared fixtures)

pytestmark = pytest.mark.browser

# The RGB values of a square of the image the browser shows (same origin, so readable).
PATCH = """(el, [x, y, r]) => { const c = document.createElement('canvas');
  c.width = el.naturalWidth; c.height = el.naturalHeight; const g = c.getContext('2d');
  g.drawImage(el, 0, 0); const d = g.getImageData(x - r, y - r, 2 * r + 1, 2 * r + 1).data;
  const out = []; for (let i = 0; i < d.length; i += 4) out.push(d[i], d[i + 1], d[i + 2]);
  return out; }"""
MARK_CELLS = "#masks-table [role=gridcell][data-col='0']"


def canvas_src(page) -> str:
    return page.locator("#canvas img").first.get_attribute("src") or ""


def wait_canvas_changed(page, old: str) -> None:
    page.wait_for_function(LOADED, arg=["#canvas img", old])


def patch(page, x: int, y: int, r: int = 4) -> np.ndarray:
    values = page.locator("#canvas img").first.evaluate(PATCH, [x, y, r])
    return np.asarray(values, np.float64).reshape(-1, 3)


def test_hiding_the_selected_mask_shows_the_photo_and_the_table_says_hidden(app, page):
    demo, _ = app
    page.locator("#upload input[type=file]").set_input_files(str(IMAGES / "dog.jpg"))
    page.wait_for_function("t => document.querySelector('#status textarea').value.includes(t)", arg="embedding cached")
    page.wait_for_function(LOADED, arg=["#canvas img", ""])
    wb = demo.workbench
    (key,) = [k for k in wb.sessions.keys() if getattr(wb.sessions.peek(k), "name", None) == "dog.jpg"]
    sess = wb.session(key)
    h, w = sess.doc.size
    assert sess.scale == 1.0  # 800 x 534: the canvas shows image pixels one to one
    cx, cy = 400, 260
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
